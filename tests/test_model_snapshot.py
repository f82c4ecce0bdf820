"""What is checked is what loads: an export reads a private copy of the model, made once.

The hostile model is real: a SavedModel whose serving function writes a file (``WriteFile``),
swapped in for ``saved_model.pb`` after the op check has passed, or in a loop during exports.
Without the copy, TensorFlow would load the swapped file and the model would write on the host.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError
from exporter.core.model_snapshot import MAX_BYTES_SETTING, model_snapshot
from exporter.core.op_policy import check_saved_model_ops
from exporter.run import export_model, verify_export
from test_op_policy import classifier_folder


@pytest.fixture(scope="module")
def pair(canary_model, tmp_path_factory):
    """A benign model folder and the bytes of a saved_model.pb that writes `marker` when run,
    saved from the same module (so the benign folder's variables fit it)."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("snapshot")
    marker = root / "written-by-the-model.txt"

    def write(image, logits):
        tf.io.write_file(str(marker), "written")
        return logits

    benign = classifier_folder(root / "benign", canary_model, lambda image, logits: logits)
    hostile = classifier_folder(root / "hostile", canary_model, write)
    hostile_pb = (hostile / "saved_model" / "saved_model.pb").read_bytes()
    return benign, hostile_pb, marker


def _fresh(benign: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(benign, folder)
    return folder


def _config(destination: Path, model_format: str) -> dict:
    return {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(destination)}}


def _published_ops_are_allowed(destination: Path) -> None:
    for export in destination.iterdir() if destination.exists() else []:
        assert not export.name.startswith("."), f"left behind: {export.name}"
        if (export / "saved_model.pb").exists():
            check_saved_model_ops(export)  # raises on WriteFile


@pytest.mark.slow
@pytest.mark.parametrize("model_format", ["tf_saved_model", "tflite"])
def test_a_pb_swapped_after_the_check_is_never_loaded(pair, tmp_path, model_format):
    """The swap lands exactly between the check (the load stage) and the conversion: the export
    goes on with the copy that was checked, the benign model, and publishes it."""
    benign, hostile_pb, marker = pair
    folder = _fresh(benign, tmp_path)

    def swap_after_the_check(stage: str, event: str) -> None:
        if (stage, event) == ("load", "done"):
            (folder / "saved_model" / "saved_model.pb").write_bytes(hostile_pb)

    destination = tmp_path / "exports"
    result = export_model(folder, _config(destination, model_format), progress=swap_after_the_check)
    assert (folder / "saved_model" / "saved_model.pb").read_bytes() == hostile_pb  # the swap happened
    assert not marker.exists()
    assert result.report["checks"]
    _published_ops_are_allowed(destination)

    # verify reads its own copy too: now the folder holds the hostile file, which is refused.
    with pytest.raises(ExportError) as refused:
        verify_export(result.output_dir, folder)
    assert refused.value.code is Code.FAILED_PRECONDITION and "WriteFile" in refused.value.message
    assert not marker.exists()


@pytest.mark.slow
def test_a_pb_swapped_in_a_loop_during_exports_never_runs_or_publishes(pair, tmp_path):
    """A thread swaps saved_model.pb between the benign and the hostile file as fast as it can
    while exports run: each export is refused naming WriteFile or publishes the benign model."""
    benign, hostile_pb, marker = pair
    folder = _fresh(benign, tmp_path)
    pb = folder / "saved_model" / "saved_model.pb"
    versions = [pb.read_bytes(), hostile_pb]
    stop = threading.Event()
    swaps = 0

    def swap_forever() -> None:
        nonlocal swaps
        while not stop.is_set():
            staged = tmp_path / f".swap-{swaps}"  # beside the model folder, on the same disk
            staged.write_bytes(versions[swaps % 2])
            os.replace(staged, pb)  # atomic: every reader sees one whole file or the other
            swaps += 1

    swapper = threading.Thread(target=swap_forever, daemon=True)
    swapper.start()
    outcomes = []
    try:
        for attempt, model_format in enumerate(["tf_saved_model", "tflite", "tf_saved_model", "tflite"]):
            destination = tmp_path / f"exports-{attempt}"
            try:
                export_model(folder, _config(destination, model_format))
                outcomes.append("published")
            except ExportError as error:
                assert error.code is Code.FAILED_PRECONDITION and "WriteFile" in error.message, error
                assert not destination.exists() or not list(destination.iterdir())
                outcomes.append("refused")
            _published_ops_are_allowed(destination)
            assert not marker.exists()
    finally:
        stop.set()
        swapper.join()
    assert swaps > 100, swaps  # the loop really ran through the exports
    assert len(outcomes) == 4


def test_a_hard_linked_file_is_refused_by_name(pair, tmp_path):
    """A hard link makes a file from anywhere on the disk part of the folder, with no link to
    see: read as the labels, it would leak into the report. Refused, naming the entry only."""
    benign, _, _ = pair
    folder = _fresh(benign, tmp_path)
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("red\nyellow\ngreen\ncyan\nblue\nmagenta\n")
    (folder / "dict.txt").unlink()
    os.link(secret, folder / "dict.txt")
    with pytest.raises(ExportError) as refused:
        export_model(folder, _config(tmp_path / "exports", "tflite"))
    assert refused.value.code is Code.INVALID_ARGUMENT
    assert refused.value.message.startswith("dict.txt has 2 hard links")
    assert "secret" not in refused.value.message and str(tmp_path) not in refused.value.message
    assert not (tmp_path / "exports").exists()


def test_the_copy_is_private_bounded_and_gone_afterwards(pair, tmp_path, monkeypatch):
    benign, _, _ = pair
    with model_snapshot(benign) as copy:
        assert copy.name == benign.name and copy != benign
        assert (os.stat(copy.parent).st_mode & 0o777) == 0o700
        assert (copy / "saved_model" / "saved_model.pb").read_bytes() == (
            benign / "saved_model" / "saved_model.pb"
        ).read_bytes()
    assert not copy.exists()

    size = sum(p.stat().st_size for p in benign.rglob("*") if p.is_file())
    monkeypatch.setenv(MAX_BYTES_SETTING, str(size - 1))
    with pytest.raises(ExportError) as limited:
        with model_snapshot(benign):
            pass
    assert limited.value.code is Code.RESOURCE_EXHAUSTED and MAX_BYTES_SETTING in limited.value.message
    monkeypatch.setenv(MAX_BYTES_SETTING, str(size))
    with model_snapshot(benign) as copy:
        assert copy.is_dir()


def test_an_absolute_link_inside_the_folder_is_refused_and_a_relative_one_kept(pair, tmp_path):
    benign, _, _ = pair
    folder = _fresh(benign, tmp_path)
    (folder / "dict.txt").rename(folder / "labels.txt")
    (folder / "dict.txt").symlink_to("labels.txt")
    with model_snapshot(folder) as copy:
        assert os.readlink(copy / "dict.txt") == "labels.txt"
    (folder / "dict.txt").unlink()
    (folder / "dict.txt").symlink_to(folder / "labels.txt")
    with pytest.raises(ExportError) as refused:
        with model_snapshot(folder):
            pass
    assert refused.value.code is Code.INVALID_ARGUMENT
    assert refused.value.message.startswith("dict.txt is a link by absolute path")
