"""modelFormat openvino: the IR read and compiled here with the OpenVINO runtime as a consumer
would (fed from the IR's own rt_info, not through the engine's verification); float32, float16 and
int8 on the digits model, the CPU's default precision checked where it is not float32, a logits
model, and `exporter predict` on the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import exports_by_quantization, run_cli
from exporter.run import export_model
from test_onnx import source_scores

QUANTIZATIONS = ("float32", "float16", "int8")


def openvino_config(destination: Path, **params) -> dict:
    return {"modelFormat": "openvino", "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}


@pytest.fixture(scope="module")
def openvino_exports(tmp_path_factory, digits_model):
    """The digits model in each quantization: quantization -> (export folder, report)."""
    return exports_by_quantization(tmp_path_factory, digits_model, "openvino", QUANTIZATIONS)


def consumer_scores(model_xml: Path, pixels: np.ndarray, precision: str | None = "f32") -> np.ndarray:
    """The OpenVINO runtime on the CPU, fed (pixel - image_mean) / image_std from the IR's rt_info."""
    import openvino

    core = openvino.Core()
    model = core.read_model(str(model_xml))
    mean = np.array(json.loads(model.get_rt_info(["exporter", "image_mean"]).astype(str)))
    std = np.array(json.loads(model.get_rt_info(["exporter", "image_std"]).astype(str)))
    config = {} if precision is None else {"INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(model, "CPU", config)
    return compiled(((pixels.astype(np.float32) - mean) / std).astype(np.float32))[compiled.output(0)]


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_an_openvino_export_runs_as_its_source_does(openvino_exports, digits_model, quantization):
    import openvino

    folder, report = openvino_exports[quantization]
    names = {p.name for p in folder.iterdir()}
    assert names == {"model.xml", "model.bin", "dict.txt", "openvino_metadata.json", "export_report.json"}
    model = openvino.Core().read_model(str(folder / "model.xml"))
    assert model.inputs[0].get_any_name() == "image" and model.outputs[0].get_any_name() == "probability"
    shape = model.inputs[0].get_partial_shape()
    assert shape[0].is_dynamic and [shape[i].get_length() for i in (1, 2, 3)] == [96, 96, 3]
    labels = (folder / "dict.txt").read_text().split()
    assert json.loads(model.get_rt_info(["exporter", "labels"]).astype(str)) == labels
    assert model.get_rt_info(["exporter", "scores"]).astype(str) == "probabilities"
    checks = report["checks"]
    assert checks["verification"]["runtime"] == "openvino" and checks["verification"]["passed"]
    default = str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    assert ("cpu_default_precision" in checks) == (default != "f32")

    pixels, expected = source_scores(digits_model)
    scores = consumer_scores(folder / "model.xml", pixels)
    agreement = np.mean(scores.argmax(1) == expected.argmax(1))
    if quantization == "float32":
        assert np.abs(scores - expected).max() < 1e-4 and agreement == 1.0
    elif quantization == "float16":
        assert np.abs(scores - expected).max() < 0.05 and agreement >= 0.98
    else:
        assert agreement >= 0.95
        assert json.loads(model.get_rt_info(["exporter", "image_mean"]).astype(str)) == [0.0, 0.0, 0.0]
    # What a user gets without the precision hint (bfloat16 on CPUs that have it) still classifies.
    assert np.mean(consumer_scores(folder / "model.xml", pixels, None).argmax(1) == expected.argmax(1)) >= 0.95


def test_int8_and_float16_are_smaller_and_int8_records_its_tries(openvino_exports):
    import openvino

    def size(quantization: str) -> int:
        folder = openvino_exports[quantization][0]
        return (folder / "model.bin").stat().st_size

    assert size("float16") < 0.6 * size("float32") and size("int8") < 0.4 * size("float32")
    model = openvino.Core().read_model(str(openvino_exports["int8"][0] / "model.xml"))
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    metadata = json.loads((openvino_exports["int8"][0] / "openvino_metadata.json").read_text())
    tries = metadata["quantizationTries"]["tries"]
    assert tries[0]["remedy"] == "plain" and sum(t["kept"] for t in tries) == 1
    kept = next(t for t in tries if t["kept"])
    assert kept["passed"] and kept["flips"] <= kept["allowed"]


def test_a_logits_model_keeps_its_logits_when_asked(zoo_model, tmp_path):
    import openvino

    result = export_model(zoo_model("tf_module_logits"), openvino_config(tmp_path, output_scores="logits"))
    model = openvino.Core().read_model(str(Path(result.output_dir) / "model.xml"))
    assert model.outputs[0].get_any_name() == "logits"
    assert model.get_rt_info(["exporter", "scores"]).astype(str) == "logits"
    assert result.report["checks"]["verification"]["passed"]


def test_predict_runs_an_openvino_export_from_the_command_line(openvino_exports, digits_model):
    folder, _ = openvino_exports["float32"]
    images = sorted((digits_model / "images" / "heldout").rglob("*.png"))[:3]
    done = run_cli("predict", str(folder), *map(str, images))
    assert done.returncode == 0, done.stderr
    for image in images:
        assert f"{image.parent.name} (" in done.stdout
    assert "(probability)" in done.stdout


def test_a_model_taking_encoded_images_converts_from_its_pruned_graph(zoo_model, tmp_path):
    """The tutorial model as a serving model that decodes JPEG/PNG bytes: OpenVINO's frontend
    refuses the decoding loop kept in the function the classifier is cut from, so the graph frozen
    and pruned to the scores is what it reads; the export is verified as any other."""
    import zoo

    held_as, options = zoo.export_arguments(zoo_model("tutorial_image_bytes"))
    for quantization in ("float32", "int8"):
        result = export_model(held_as, openvino_config(tmp_path / quantization, quantization=quantization), **options)
        assert result.report["checks"]["verification"]["passed"], quantization
