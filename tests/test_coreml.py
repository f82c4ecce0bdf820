"""core_ml exports: the saved spec checked for real (Core ML cannot predict on Linux)."""

import json
from pathlib import Path

import pytest

from converters.coreml import check_spec
from exporter.core.errors import Code, ExportError
from exporter.core.model_source import read_model
from exporter.core.request import parse_output_config
from exporter.run import export_model


def coreml_config(destination: Path, **params) -> dict:
    return {"modelFormat": "core_ml", "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}


@pytest.mark.parametrize(
    "model_type,artifact,kind,probabilities",
    [
        ("neuralnetwork", "model.mlmodel", "neuralNetworkClassifier", "Identity"),
        ("mlprogram", "model.mlpackage", "mlProgram", "classLabel_probs"),
    ],
)
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_canary_exports_with_checked_spec(canary_model, tmp_path, model_type, artifact, kind, probabilities, precision):
    result = export_model(canary_model, coreml_config(tmp_path, model_type=model_type, precision=precision))
    folder = Path(result.output_dir)
    assert (folder / artifact).exists() and (folder / "dict.txt").read_text().split()[0] == "red"
    spec = result.report["checks"]["spec"]
    assert spec["modelType"] == kind and spec["classLabel"] == "classLabel" and spec["probabilities"] == probabilities
    assert spec["input"]["height"] == 32 and spec["input"]["colorSpace"] == "RGB"
    assert spec["input"]["scale"] == pytest.approx(1 / 255, rel=1e-3) and spec["input"]["bias"] == [0.0, 0.0, 0.0]
    assert spec["labels"] == ["red", "yellow", "green", "cyan", "blue", "magenta"]
    assert spec["precision"] == precision  # read from the saved weights
    assert spec["numericalParity"] == "not run: Core ML cannot predict on Linux"
    assert "verification" not in result.report["checks"]


def test_float16_halves_the_weights(digits_model, tmp_path):
    sizes = {}
    for precision in ("float32", "float16"):
        result = export_model(
            digits_model, coreml_config(tmp_path / precision, model_type="mlprogram", precision=precision)
        )
        sizes[precision] = sum(p.stat().st_size for p in Path(result.output_dir).rglob("weight.bin"))
    assert sizes["float16"] < 0.6 * sizes["float32"]


def test_scale_and_bias_follow_the_manifest(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"] = {"mean": [127.5] * 3, "std": [127.5] * 3}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for model_type in ("neuralnetwork", "mlprogram"):
        spec = export_model(folder, coreml_config(tmp_path / model_type, model_type=model_type)).report["checks"][
            "spec"
        ]
        assert spec["input"]["scale"] == pytest.approx(1 / 127.5, rel=1e-3)
        assert spec["input"]["bias"] == pytest.approx([-1.0] * 3, rel=1e-3)


def test_spec_check_catches_a_mismatch(canary_model, model_copy, tmp_path):
    result = export_model(canary_model, coreml_config(tmp_path))
    folder = model_copy(canary_model)
    (folder / "dict.txt").write_text("a\nb\nc\nd\ne\nf\n")
    with pytest.raises(ExportError) as raised:
        check_spec(
            read_model(folder),
            Path(result.output_dir) / "model.mlmodel",
            {"model_type": "neuralnetwork", "precision": "float32"},
        )
    assert raised.value.code is Code.FAILED_PRECONDITION and "labels" in raised.value.message


def test_per_channel_std_is_refused(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"] = {"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError) as raised:
        export_model(folder, coreml_config(tmp_path / "out"))
    assert raised.value.code is Code.FAILED_PRECONDITION and "one scale for all channels" in raised.value.message
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "params,problem",
    [
        ({"model_type": "neuralnetwork", "minimum_deployment_target": "iOS15"}, "needs model_type mlprogram"),
        ({"model_type": "mlprogram", "minimum_deployment_target": "iOS14"}, "cannot run an mlprogram"),
    ],
)
def test_combinations_coremltools_refuses_are_rejected_up_front(params, problem):
    with pytest.raises(ExportError) as raised:
        parse_output_config(coreml_config(Path("/tmp/x"), **params))
    (violation,) = raised.value.violations
    assert violation.field == "outputConfig.params.minimum_deployment_target" and problem in violation.description
