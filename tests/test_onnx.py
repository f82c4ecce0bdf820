"""modelFormat onnx: tf2onnx's conversion of the serving signature, run here in onnxruntime as a
consumer would (the test feeds it from the model's own metadata, not through the engine's
verification), and checked by onnx.checker; float32, float16 and int8 on the digits model, a
logits model, the opset param against what tf2onnx writes, and `exporter predict` on the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import exports_by_quantization, run_cli
from exporter.core.images import load_image_set, normalize
from exporter.core.model_source import read_model
from exporter.run import export_model

QUANTIZATIONS = ("float32", "float16", "int8")


def onnx_config(destination: Path, **params) -> dict:
    return {"modelFormat": "onnx", "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}


@pytest.fixture(scope="module")
def onnx_exports(tmp_path_factory, digits_model):
    """The digits model in each quantization: quantization -> (export folder, report)."""
    return exports_by_quantization(tmp_path_factory, digits_model, "onnx", QUANTIZATIONS)


def source_scores(model_folder: Path, count: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 pixels, the SavedModel's scores) of the first held-out images, computed here."""
    import tensorflow as tf

    source = read_model(model_folder)
    images = load_image_set(
        source.heldout_dir, source.labels, source.height, source.width, limit=count, purpose="held-out"
    )
    serve = tf.saved_model.load(str(source.saved_model_dir)).signatures["serving_default"]
    inputs = normalize(images.pixels, source.mean, source.std)
    scores = serve(**{source.input_key: tf.constant(inputs)})[source.output_key].numpy()
    return images.pixels, scores


def consumer_scores(model_path: Path, pixels: np.ndarray) -> np.ndarray:
    """What a consumer gets: onnxruntime on the CPU, fed (pixel - image_mean) / image_std from the
    model's metadata_props, the whole batch in one run."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    mean, std = np.array(json.loads(props["image_mean"])), np.array(json.loads(props["image_std"]))
    fed = ((pixels.astype(np.float32) - mean) / std).astype(np.float32)
    (only_input,) = session.get_inputs()
    return session.run(None, {only_input.name: fed})[0]


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_an_onnx_export_runs_in_onnxruntime_as_its_source_does(onnx_exports, digits_model, quantization):
    import onnx

    folder, report = onnx_exports[quantization]
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "dict.txt", "onnx_metadata.json", "export_report.json"}
    model = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.name == "image" and graph_output.name == "probability"
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [96, 96, 3]
    props = {p.key: p.value for p in model.metadata_props}
    labels = (folder / "dict.txt").read_text().split()
    assert json.loads(props["labels"]) == labels and props["scores"] == "probabilities"
    assert report["checks"]["verification"]["runtime"] == "onnxruntime"
    assert report["checks"]["verification"]["passed"]

    pixels, expected = source_scores(digits_model)
    scores = consumer_scores(folder / "model.onnx", pixels)
    assert scores.shape == expected.shape
    agreement = np.mean(scores.argmax(1) == expected.argmax(1))
    if quantization == "float32":
        assert np.abs(scores - expected).max() < 1e-4 and agreement == 1.0
    elif quantization == "float16":
        assert np.abs(scores - expected).max() < 0.05 and agreement >= 0.98
    else:
        assert agreement >= 0.95
        assert json.loads(props["image_mean"]) == [0.0, 0.0, 0.0]  # raw 0..255 pixels in
        assert json.loads(props["image_std"]) == [1.0, 1.0, 1.0]


def test_int8_is_quantized_and_smaller_and_records_its_tries(onnx_exports):
    import onnx

    float_folder, _ = onnx_exports["float32"]
    int8_folder, _ = onnx_exports["int8"]
    model = onnx.load(str(int8_folder / "model.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert (int8_folder / "model.onnx").stat().st_size < 0.4 * (float_folder / "model.onnx").stat().st_size
    tries = json.loads((int8_folder / "onnx_metadata.json").read_text())["quantizationTries"]["tries"]
    assert tries[0]["remedy"] == "plain" and sum(t["kept"] for t in tries) == 1
    kept = next(t for t in tries if t["kept"])
    assert kept["passed"] and kept["flips"] <= kept["allowed"]


def test_float16_halves_the_weights(onnx_exports):
    import onnx

    float_size = (onnx_exports["float32"][0] / "model.onnx").stat().st_size
    half_size = (onnx_exports["float16"][0] / "model.onnx").stat().st_size
    assert half_size < 0.6 * float_size
    model = onnx.load(str(onnx_exports["float16"][0] / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out


def test_the_opset_param_offers_what_tf2onnx_writes_and_an_older_one_runs(digits_model, tmp_path):
    import onnx
    from tf2onnx import constants

    from exporter.core.formats import format_row

    opset = format_row("onnx").param("opset")
    assert opset.default == max(opset.allowed, key=int) == str(max(constants.OPSET_TO_IR_VERSION))
    result = export_model(digits_model, onnx_config(tmp_path, opset="13"))
    model = onnx.load(str(Path(result.output_dir) / "model.onnx"))
    assert {entry.domain: entry.version for entry in model.opset_import}[""] == 13
    assert result.report["checks"]["verification"]["passed"]


def test_a_logits_model_keeps_its_logits_when_asked(zoo_model, tmp_path):
    import onnx

    result = export_model(zoo_model("tf_module_logits"), onnx_config(tmp_path, output_scores="logits"))
    folder = Path(result.output_dir)
    model = onnx.load(str(folder / "model.onnx"))
    assert model.graph.output[0].name == "logits"
    assert {p.key: p.value for p in model.metadata_props}["scores"] == "logits"
    assert result.report["checks"]["verification"]["passed"]


def test_predict_runs_an_onnx_export_from_the_command_line(onnx_exports, digits_model):
    folder, _ = onnx_exports["int8"]
    images = sorted((digits_model / "images" / "heldout").rglob("*.png"))[:3]
    done = run_cli("predict", str(folder), *map(str, images))
    assert done.returncode == 0, done.stderr
    for image in images:
        assert f"{image.parent.name} (" in done.stdout  # each image's own label among its top three
    assert "(probability)" in done.stdout


def test_exact_gelu_converts_through_erf(zoo_model, tmp_path):
    """The attention model's exact GELU is TensorFlow's Erfc, which ONNX lacks and tf2onnx passes
    through: rewritten as 1 - Erf, the model passes onnx.checker and its verification."""
    import onnx

    result = export_model(zoo_model("attention"), onnx_config(tmp_path, quantization="float32"))
    ops = {node.op_type for node in onnx.load(str(Path(result.output_dir) / "model.onnx")).graph.node}
    assert "Erf" in ops and "Erfc" not in ops
    assert result.report["checks"]["verification"]["passed"]
