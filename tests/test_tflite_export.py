"""Real TFLite exports of the sample models, verified, and their artifacts run independently."""

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TFLITE_MODES as MODES
from conftest import tflite_config as config
from converters.tflite import converter as tflite
from converters.verification import Tolerance, compare, make_reference
from exporter.core.errors import Code, ExportError
from exporter.core.images import list_images, load_pixels
from exporter.core.model_source import read_model
from exporter.run import STAGES, export_model

FOLDER_NAME = r"model-export-{}-\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z"


CASES = [(model, mode) for model in ("digits", "canary") for mode in MODES]


@pytest.fixture(scope="module")
def exports(tflite_exports):
    return tflite_exports


def test_every_quantization_value_has_a_mode():
    from exporter.core.formats import format_row

    assert set(format_row("tflite").param("quantization").allowed) == set(tflite.MODES) == set(MODES)


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_export_folder_is_complete_and_alone(exports, case):
    destination, result, stages = exports[case]
    display = {"digits": "digits_mobilenetv2", "canary": "colour_canary"}[case[0]]
    (folder,) = list(destination.iterdir())  # no staging folder left beside it
    assert re.fullmatch(FOLDER_NAME.format(display), folder.name)
    assert str(folder) == result.output_dir
    assert sorted(p.name for p in folder.iterdir()) == [
        "dict.txt",
        "export_report.json",
        "model.tflite",
        "tflite_metadata.json",
    ]
    assert stages == [(s, e) for s in STAGES for e in ("start", "done")]


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_report_records_checks_files_and_versions(exports, case):
    destination, result, _ = exports[case]
    folder = Path(result.output_dir)
    report = json.loads((folder / "export_report.json").read_text())
    assert report["modelFormat"] == "tflite"
    assert report["params"]["quantization"] == case[1]
    check = report["checks"]["verification"]
    assert check["passed"] and check["runtime"] == "ai_edge_litert"
    assert check["images"] >= 300
    assert check["decided"] - check["agreeing"] <= check["allowed_disagreements"]
    for entry in report["artifacts"]:
        data = (folder / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data) > 0
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert report["versions"]["tensorflow"] == "2.19.0"
    assert set(report["timingsSeconds"]) == {"load", "convert", "verify"}


def test_float32_agrees_on_every_decided_image(exports):
    for name in ("digits", "canary"):
        check = exports[name, "float32"][1].report["checks"]["verification"]
        assert check["agreeing"] == check["decided"]
        assert check["max_abs_diff"] < 1e-4


def test_uint8_digits_keeps_accuracy(exports):
    check = exports["digits", "uint8"][1].report["checks"]["verification"]
    assert check["source_accuracy"] >= 0.9
    assert check["artifact_accuracy"] >= check["source_accuracy"] - 0.02
    assert check["decided"] - check["agreeing"] <= 0.02 * check["decided"]


def interpreter(folder: Path):
    from ai_edge_litert.interpreter import Interpreter

    model = Interpreter(model_path=str(folder / "model.tflite"))
    model.allocate_tensors()
    return model


def test_uint8_artifact_takes_raw_pixels_for_a_0_255_model(exports, digits_model):
    folder = Path(exports["digits", "uint8"][1].output_dir)
    model = interpreter(folder)
    (inp,), (out,) = model.get_input_details(), model.get_output_details()
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    assert list(inp["shape"]) == [1, 96, 96, 3]
    assert inp["quantization"] == (1.0, 0)
    metadata = json.loads((folder / "tflite_metadata.json").read_text())
    assert metadata["inferenceType"] == "QUANTIZED_UINT8"
    assert metadata["inputShape"] == [1, 96, 96, 3]
    assert metadata["inputTensor"] == inp["name"]
    assert metadata["outputTensors"] == [out["name"]]
    assert metadata["outputTensorRepresentation"] == ["scores"]
    labels = (folder / "dict.txt").read_text().splitlines()
    assert labels == list(read_model(digits_model).labels)


def tensor_types(folder: Path) -> set:
    return {t["dtype"] for t in interpreter(folder).get_tensor_details()}


def test_float32_artifact_is_float(exports):
    folder = Path(exports["digits", "float32"][1].output_dir)
    (inp,) = interpreter(folder).get_input_details()
    assert inp["dtype"] == np.float32
    assert json.loads((folder / "tflite_metadata.json").read_text())["inferenceType"] == "FLOAT"
    assert np.int8 not in tensor_types(folder) and np.float16 not in tensor_types(folder)


def test_int8_artifact_takes_shifted_pixels(exports):
    folder = Path(exports["digits", "int8"][1].output_dir)
    model = interpreter(folder)
    (inp,), (out,) = model.get_input_details(), model.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert inp["quantization"] == (1.0, -128)
    assert json.loads((folder / "tflite_metadata.json").read_text())["inferenceType"] == "QUANTIZED_INT8"


def test_float16_and_dynamic_range_keep_float_input_with_smaller_weights(exports):
    sizes = {}
    for mode in ("float32", "float16", "dynamic_range"):
        folder = Path(exports["digits", mode][1].output_dir)
        (inp,) = interpreter(folder).get_input_details()
        assert inp["dtype"] == np.float32
        sizes[mode] = (folder / "model.tflite").stat().st_size
    assert np.float16 in tensor_types(Path(exports["digits", "float16"][1].output_dir))
    assert np.int8 in tensor_types(Path(exports["digits", "dynamic_range"][1].output_dir))
    assert sizes["float16"] < 0.6 * sizes["float32"]
    assert sizes["dynamic_range"] < 0.35 * sizes["float32"]


def classify_files(folder: Path, images: list[Path], size: int, channels=(0, 1, 2)) -> list[str]:
    """Classify image files with the uint8 artifact alone: decode, resize, feed raw pixels."""
    model = interpreter(folder)
    (inp,), (out,) = model.get_input_details(), model.get_output_details()
    labels = (folder / "dict.txt").read_text().split()
    answers = []
    for path in images:
        pixels = load_pixels(path, size, size)[..., list(channels)]
        model.set_tensor(inp["index"], pixels[None])
        model.invoke()
        answers.append(labels[int(model.get_tensor(out["index"])[0].argmax())])
    return answers


def test_canary_uint8_artifact_reads_colours_by_itself(exports, canary_model):
    folder = Path(exports["canary", "uint8"][1].output_dir)
    images = list_images(canary_model / "images" / "heldout")
    truth = [p.parent.name for p in images]
    assert classify_files(folder, images, 32) == truth
    # The same artifact fed BGR misreads the colours: the canary shows a channel swap at once.
    swapped = classify_files(folder, images, 32, channels=(2, 1, 0))
    assert sum(a != t for a, t in zip(swapped, truth, strict=True)) > len(truth) / 3


def test_verification_catches_a_channel_swap(exports, canary_model):
    source = read_model(canary_model)
    reference = make_reference(source)
    model = tflite.TFLiteModel(Path(exports["canary", "float32"][1].output_dir) / "model.tflite")
    swapped = model.predict(reference.inputs[..., ::-1])
    with pytest.raises(ExportError) as raised:
        compare("ai_edge_litert", reference, swapped, tflite.MODES["float32"].tolerance, "swapped")
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert re.search(r"top-1 differs from the source on \d+ of \d+ decided images \(allowed 0\)", raised.value.message)


def test_export_outside_tolerance_fails_and_leaves_nothing(canary_model, tmp_path, monkeypatch):
    strict = Tolerance(max_disagreement_fraction=0.0, max_abs_diff=1e-9)
    monkeypatch.setitem(tflite.MODES, "uint8", dataclasses.replace(tflite.MODES["uint8"], tolerance=strict))
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, config(tmp_path, "uint8"))
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert re.search(r"max abs difference \S+ exceeds 1e-09", raised.value.message)
    # nothing published: only the failed attempt's report, in its hidden .failed folder, holding no model
    left = list(tmp_path.iterdir())
    assert [p.name.endswith(".failed") for p in left] == [True]
    assert [f.name for f in left[0].iterdir()] == ["export_report.json"]


def test_cloud_model_type_is_failed_precondition(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model_type"] = "cloud"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    destination = tmp_path / "out"
    with pytest.raises(ExportError) as raised:
        export_model(folder, config(destination, "uint8"))
    assert raised.value.code is Code.FAILED_PRECONDITION and "'cloud'" in raised.value.message
    assert not destination.exists()


def test_report_names_the_model_by_name_and_content_not_path(exports, digits_model, tmp_path):
    report = exports["digits", "uint8"][1].report
    text = json.dumps(report)
    assert str(digits_model) not in text and str(digits_model.parent) not in text
    assert report["model"]["displayName"] == read_model(digits_model).display_name
    copy = tmp_path / "elsewhere"
    shutil.copytree(digits_model, copy)
    assert report["model"]["digest"] == read_model(copy).content_digest()
    (copy / "dict.txt").write_text((copy / "dict.txt").read_text().replace("zero", "nought"))
    assert read_model(copy).content_digest() != report["model"]["digest"]


def graph_of(flatbuffer: bytes) -> list:
    """Every operator, and every tensor with its type, shape, quantization and data: the model
    without its metadata (whose conversion record carries a hash of the model it was written into)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    (graph,) = model.subgraphs

    def data(buffer_index: int) -> bytes:
        held = model.buffers[buffer_index].data
        return b"" if held is None else bytes(held)

    def quantization(tensor) -> tuple:
        q = tensor.quantization
        if q is None or q.scale is None:
            return ()
        return tuple(q.scale.tolist()), tuple(q.zeroPoint.tolist())

    operators = [
        (model.operatorCodes[op.opcodeIndex].builtinCode, op.inputs.tolist(), op.outputs.tolist())
        for op in graph.operators
    ]
    tensors = [(t.name, t.type, t.shape.tolist(), quantization(t), data(t.buffer)) for t in graph.tensors]
    return [operators, tensors, graph.inputs.tolist(), graph.outputs.tolist()]


@pytest.mark.parametrize("io_type", ["uint8", "int8"])
def test_calibrate_then_quantize_is_the_converters_own_full_integer_model(canary_model, io_type):
    """The split the engine uses to calibrate once for uint8 and int8 gives the converter's model."""
    import tensorflow as tf

    from converters.input_plan import input_plan

    source = read_model(canary_model)
    plan = input_plan(source, integer=True)
    pixels = tflite.calibration_pixels(source, 20)
    with tflite._converter(source, io_type, plan, False, plan.feed(pixels)) as converter:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io_type)
        stock = converter.convert()
    split = tflite.quantize_fully(tflite.calibrated_model(source, plan, False, pixels), io_type)
    assert graph_of(split) == graph_of(stock)
    assert len(split) == len(stock)


def test_uint8_and_int8_share_one_calibration_within_a_scope(canary_model, monkeypatch):
    from converters.load_scope import shared_loads

    source = read_model(canary_model)
    calibrations = []
    calibrate = tflite._converter

    def counting(source, quantization, plan, add_softmax, inputs):
        if inputs is not None:
            calibrations.append(quantization)
        return calibrate(source, quantization, plan, add_softmax, inputs)

    monkeypatch.setattr(tflite, "_converter", counting)
    with shared_loads():
        uint8 = tflite.convert_to_tflite(source, "uint8", 20)
        int8 = tflite.convert_to_tflite(source, "int8", 20)
    assert len(calibrations) == 1
    interpreters = [tf_interpreter(model) for model in (uint8, int8)]
    assert [i.get_input_details()[0]["dtype"] for i in interpreters] == [np.uint8, np.int8]
    # Outside a scope nothing is kept: each conversion calibrates again.
    tflite.convert_to_tflite(source, "int8", 20)
    assert len(calibrations) == 2


def tf_interpreter(flatbuffer: bytes):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=flatbuffer)
