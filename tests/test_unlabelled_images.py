"""Verification without labels: a model folder whose images carry no labels (or that has only
calibration images) is still verified, by agreement with the source model; with no images at all
the export is refused at once, saying what to pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import EXPORTER
from exporter.core.errors import Code, ExportError
from exporter.core.images import list_images
from exporter.run import export_model


def tflite_float(out: Path) -> dict:
    return {
        "modelFormat": "tflite",
        "gcsDestination": {"outputUriPrefix": str(out)},
        "params": {"quantization": "float32"},
    }


def flatten(folder: Path) -> int:
    """Move every image under `folder` to its top, named so that no label can be read from it."""
    images = list_images(folder)
    for i, path in enumerate(images):
        path.rename(folder / f"image-{i:04d}{path.suffix}")
    for sub in [p for p in folder.iterdir() if p.is_dir()]:
        shutil.rmtree(sub)
    return len(images)


def test_unlabelled_heldout_images_verify_by_agreement(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    count = flatten(folder / "images" / "heldout")
    result = export_model(folder, tflite_float(tmp_path / "out"))
    check = result.report["checks"]["verification"]
    assert check["images"] == count and check["agreeing"] == check["decided"] > 0
    assert check["source_accuracy"] is None and check["artifact_accuracy"] is None
    assert result.report["model"]["verificationImages"] == {"from": "heldout", "images": count, "labelled": 0}


def test_calibration_images_stand_in_for_missing_heldout_images(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    shutil.rmtree(folder / "images" / "heldout")
    calibration = len(list_images(folder / "images" / "calibration"))
    result = export_model(folder, tflite_float(tmp_path / "out"))
    assert result.report["model"]["verificationImages"] == {
        "from": "calibration",
        "images": calibration,
        "labelled": calibration,
    }
    check = result.report["checks"]["verification"]
    assert check["images"] == calibration and check["source_accuracy"] is not None


def test_no_images_at_all_is_refused_before_anything_loads(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    shutil.rmtree(folder / "images")
    out = tmp_path / "out"
    with pytest.raises(ExportError) as raised:
        export_model(folder, tflite_float(out))
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert raised.value.message.startswith("no images to verify the export with")
    assert "pass --images DIR" in raised.value.message
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_the_cli_names_the_images_option_at_once(canary_model, model_copy, tmp_path):
    """One line and a non-zero exit, from the load stage (no conversion was started)."""
    folder = model_copy(canary_model)
    shutil.rmtree(folder / "images")
    result = subprocess.run(
        [str(EXPORTER), "export", "--model", str(folder), "--format", "tflite", "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("exporter: FAILED_PRECONDITION: no images to verify the export with"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
