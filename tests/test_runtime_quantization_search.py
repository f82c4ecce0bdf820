"""The int8 search of the onnx and openvino exports down to its last remedy: the activations with
the largest quantization error, measured in the runtime, are left in float.

The digits model is quantized by the runtime's own quantizer (onnxruntime's QDQ quantization,
NNCF); the worst activation the ranking names is then kept in float, and the quantized model is
read back to check that no quantization is left on it. A whole export
with a budget of no flip at all runs the search through every remedy: each try starts from the best
try before it, and the float layers of a ``float_layers`` try include the best try's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters import quantization_budget as budget
from converters.calibration import calibration_pixels
from converters.input_plan import input_plan
from exporter.core.model_source import read_model
from exporter.failed_export import ExportFailed
from exporter.run import export_model

CALIBRATION_IMAGES = 16


@pytest.fixture(autouse=True)
def one_load():
    """The source loaded once for the test, as an export's steps share it."""
    from converters.load_scope import shared_loads

    with shared_loads():
        yield


def _calibration(model_folder: Path):
    source = read_model(model_folder)
    plan = input_plan(source, integer=True)
    return source, plan, plan.feed(calibration_pixels(source, CALIBRATION_IMAGES))


def test_onnx_worst_activation_is_ranked_and_kept_in_float(digits_model):
    import onnx

    from converters.onnx import converter, layer_errors

    source, plan, inputs = _calibration(digits_model)
    model = converter.float_model(source, plan, False, "probability", 18)
    plain = converter.quantize_int8(model, inputs, budget.Recipe(len(inputs)))
    ranked = layer_errors.worst_layers(plain, inputs, converter.INPUT_NAME)
    pairs = layer_errors.quantized_activations(onnx.load_from_string(plain))
    assert len(ranked) == len([pair for pair in pairs if pair[2]]) > 10
    float_names = {node.name for node in onnx.load_from_string(model).graph.node}
    worst = ranked[0]
    assert set(worst) <= float_names  # names quantize_static's nodes_to_exclude knows

    (activation,) = [name for name, _, nodes in pairs if nodes == worst]
    kept = onnx.load_from_string(converter.quantize_int8(model, inputs, budget.Recipe(len(inputs), float_layers=worst)))
    quantized = {node.input[0] for node in kept.graph.node if node.op_type == "QuantizeLinear"}
    assert activation not in quantized, f"{activation} is still quantized"
    assert quantized, "nothing else is quantized"


def test_openvino_worst_activation_is_ranked_and_kept_in_float(digits_model):
    from converters.openvino import converter, layer_errors

    source, plan, inputs = _calibration(digits_model)
    model = converter.float_model(source, plan, False, "probability")
    plain = converter.quantize_int8(model, inputs, budget.Recipe(len(inputs)))
    ranked = layer_errors.worst_layers(plain, inputs)
    assert len(ranked) > 10
    worst = ranked[0]
    assert set(worst) <= {op.get_friendly_name() for op in model.get_ordered_ops()}

    kept = converter.quantize_int8(model, inputs, budget.Recipe(len(inputs), float_layers=worst))
    readers = [op for op in kept.get_ordered_ops() if op.get_friendly_name() in worst]
    assert readers, "the ops kept in float are gone from the quantized model"
    for op in readers:
        sources = {value.get_node().get_type_name() for value in op.input_values()}
        assert "FakeQuantize" not in sources, f"{op.get_friendly_name()} still reads a quantized input"


def _tries(model_format: str, destination: Path, digits_model: Path) -> list[dict]:
    """Every try of an int8 export allowed no flip: from the published metadata, or from the
    failed export's report (its remedies: every try after the plain one)."""
    config = {
        "modelFormat": model_format,
        "gcsDestination": {"outputUriPrefix": str(destination)},
        "params": {"quantization": "int8", "max_disagreement": "0", "calibration_count": str(CALIBRATION_IMAGES)},
    }
    try:
        result = export_model(digits_model, config)
    except ExportFailed as failed:
        return [{"remedy": "plain", "improved": True}, *failed.report["failedCheck"]["remedies"]]
    metadata = json.loads((Path(result.output_dir) / f"{model_format}_metadata.json").read_text())
    return metadata["quantizationTries"]["tries"]


@pytest.mark.slow
@pytest.mark.parametrize("model_format", ["onnx", "openvino"])
def test_a_search_allowed_no_flip_ends_with_worst_layers_in_float_each_try_from_the_best(
    digits_model, tmp_path, model_format
):
    tries = _tries(model_format, tmp_path, digits_model)
    remedies = [entry["remedy"] for entry in tries]
    assert remedies[0] == "plain" and "float_layers" in remedies, remedies
    best = 0
    for index, entry in enumerate(tries[1:], start=1):
        assert entry["builds_on"] == best, (index, entry)
        if entry["remedy"] == "float_layers":
            base = tries[best].get("float_layers", [])
            assert entry["float_layers"][: len(base)] == base and len(entry["float_layers"]) > len(base)
        if entry["improved"]:
            best = index
