"""An export that misses its tolerance: an error with the numbers, the remedies tried and the params
that would make it pass, and the failed attempt's report kept (never looking like an export)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from exporter.core.errors import Code
from exporter.failed_export import ExportFailed
from exporter.run import export_model, verify_export


@pytest.fixture(scope="module")
def float16_hostile_model(tmp_path_factory, canary_model):
    """A classifier whose decision rides on weight digits float16 drops: its last layer's rows are
    1024 plus 0.2 on the diagonal (float16's step at 1024 is 1, and 32 when the converter folds the
    factor 32 before it into the weights), so in float16 every row is the same and every class
    scores alike, while float32 keeps them apart by 6.4 times a softmax."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    classes = len((canary_model / "dict.txt").read_text().split())

    class Hostile(tf.Module):
        def __init__(self):
            super().__init__()
            self.conv = tf.Variable(rng.normal(0, 0.5, (3, 3, 3, 16)).astype(np.float32))
            self.project = tf.Variable(rng.normal(0, 1.0, (16, classes)).astype(np.float32))
            self.last = tf.Variable((1024 + 0.2 * np.eye(classes)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(image, self.conv, 1, "SAME")), axis=[1, 2])
            spread = 32 * tf.nn.softmax(5 * features @ self.project)
            return {"probabilities": tf.nn.softmax(spread @ self.last)}

    root = tmp_path_factory.mktemp("float16-hostile")
    module = Hostile()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary_model / "dict.txt", root / "dict.txt")
    shutil.copytree(canary_model / "images", root / "images")
    (root / "manifest.json").write_text(json.dumps({"display_name": "float16_hostile", "input": {"range": "0..1"}}))
    return root


def tflite(destination: Path, quantization: str) -> dict:
    return {
        "modelFormat": "tflite",
        "gcsDestination": {"outputUriPrefix": str(destination)},
        "params": {"quantization": quantization},
    }


def test_a_missed_tolerance_says_what_would_pass_and_keeps_its_report(float16_hostile_model, tmp_path):
    with pytest.raises(ExportFailed) as raised:
        export_model(float16_hostile_model, tflite(tmp_path, "float16"))
    error = raised.value
    assert error.code is Code.FAILED_PRECONDITION
    # The numbers, the remedies tried, the params that may make it pass.
    flips = re.search(r"top-1 differs from the source on (\d+) of (\d+) decided images", error.message)
    assert flips and int(flips.group(1)) > 0
    assert re.search(r"max abs difference [0-9.]+ exceeds 0\.05", error.message)
    assert "no remedy ran for this format and quantization" in error.message
    assert "may pass with (not measured) params quantization=float32" in error.message

    # Kept beside where the export would have been, hidden, holding the report only.
    (kept,) = tmp_path.iterdir()
    assert kept.name.startswith(".model-export-float16_hostile-") and kept.name.endswith(".failed")
    assert error.report_path == kept / "export_report.json"
    assert [p.name for p in kept.iterdir()] == ["export_report.json"]
    report = json.loads(error.report_path.read_text())
    assert report == error.report and report["state"] == "FAILED"
    assert "artifacts" not in report and report["convertReports"] == {}
    assert report["error"] == {"code": int(Code.FAILED_PRECONDITION), "message": error.message, "details": []}
    check = report["failedCheck"]
    assert check["passed"] is False and check["decided"] - check["agreeing"] == int(flips.group(1))
    assert check["max_abs_diff"] > check["tolerance"]["max_abs_diff"] == 0.05
    assert {"quantization": "float32"} in [s["params"] for s in report["suggestedParams"]]
    assert report["params"]["quantization"] == "float16" and report["timingsSeconds"]["convert"] > 0

    # It is no export: verify refuses it.
    with pytest.raises(Exception) as refused:
        verify_export(kept, float16_hostile_model)
    assert "holds the export_report.json of a failed export, not an export" in str(refused.value)

    # A suggestion that was not measured says so (this model's float32 scores differ from
    # TensorFlow's by more than 1e-4 too: its logits are sums near 32768).
    (float32,) = [s for s in report["suggestedParams"] if s["params"] == {"quantization": "float32"}]
    assert float32["outcome"] == "not measured"
    # Its scores are off as well as its top-1: no budget of flips is offered as passing.
    assert "passes with" not in error.message
    assert all(s["outcome"] == "not measured" for s in report["suggestedParams"])


def test_the_cli_prints_where_the_failed_report_is(float16_hostile_model, tmp_path):
    result = run_cli(
        "export", "--model", str(float16_hostile_model), "--output", str(tmp_path), "--param", "quantization=float16"
    )
    assert result.returncode == 1
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("exporter: ")]
    assert line.startswith("exporter: FAILED_PRECONDITION: verification of model.tflite (float16) failed: ")
    (kept,) = tmp_path.iterdir()
    assert line.endswith(f"(the failed attempt's report: {kept / 'export_report.json'})")
    assert json.loads((kept / "export_report.json").read_text())["state"] == "FAILED"


def test_a_crash_keeps_nothing(canary_model, tmp_path, monkeypatch):
    """Only a failure with more to say than its error line keeps a report."""
    from converters import REGISTRY

    def crash(source, workdir, params):
        raise RuntimeError("converter blew up")

    monkeypatch.setattr(REGISTRY["tflite"], "convert", crash)
    with pytest.raises(ExportFailed) as raised:
        export_model(canary_model, tflite(tmp_path, "uint8"))
    assert raised.value.report_path is None and raised.value.report["state"] == "FAILED"
    assert list(tmp_path.iterdir()) == []


def test_a_sandboxed_export_reports_the_same_numbers(float16_hostile_model, tmp_path):
    """The check's numbers cross from the sandbox's child as data, into the same report."""
    from exporter.sandbox import Sandbox

    with pytest.raises(ExportFailed) as raised:
        export_model(float16_hostile_model, tflite(tmp_path, "float16"), sandbox=Sandbox())
    check = raised.value.report["failedCheck"]
    assert check["passed"] is False and check["decided"] > check["agreeing"]
    assert "may pass with (not measured) params quantization=float32" in raised.value.message
    assert raised.value.report_path.is_file()


def measured(flips: int, decided: int = 360, max_abs_diff: float = 0.2, limit: float | None = None) -> dict:
    """A failed check as converters/verification.py records it (the fields the suggestions read)."""
    return {
        "decided": decided,
        "agreeing": decided - flips,
        "allowed_disagreements": 7,
        "max_abs_diff": max_abs_diff,
        "tolerance": {"max_disagreement_fraction": 0.02, "max_abs_diff": limit},
    }


def test_a_looser_budget_is_offered_only_where_it_passes():
    from exporter.core.formats import TFLITE_QUANTIZATION, DestinationKind, FormatRow, Param
    from exporter.failed_export import suggested_params

    budget = Param("max_disagreement", "auto", "a fraction of the decided images", check=lambda v: None)
    row = FormatRow("tflite", "TFLite", ("model.tflite",), DestinationKind.GCS, (TFLITE_QUANTIZATION, budget))
    uint8 = {"quantization": "uint8"}
    (passes, float16) = suggested_params(row, uint8, measured(flips=12))
    assert passes == {
        "params": {"max_disagreement": "0.034"},
        "outcome": "passes",
        "why": "the 12 flips measured on 360 decided images fit a budget of 0.034",
    }
    assert float16["params"] == {"quantization": "float16"} and float16["outcome"] == "not measured"
    # 0.034 of 360 is 12.24: floor(12.24) = 12 flips allowed, exactly what was measured.
    assert int(0.034 * 360 + 1e-9) == 12
    # Scores off as well, or a budget past 10%: no budget offered.
    assert [s["params"] for s in suggested_params(row, uint8, measured(12, max_abs_diff=0.3, limit=0.05))] == [
        {"quantization": "float16"}
    ]
    assert [s["params"] for s in suggested_params(row, uint8, measured(flips=40))] == [{"quantization": "float16"}]
    # A format without the param: only what it takes.
    no_budget = FormatRow("tflite", "TFLite", ("model.tflite",), DestinationKind.GCS, (TFLITE_QUANTIZATION,))
    assert [s["params"] for s in suggested_params(no_budget, uint8, measured(flips=12))] == [
        {"quantization": "float16"}
    ]
