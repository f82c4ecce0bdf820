"""modelFormat ``onnx``: the serving signature converted by tf2onnx, verified in onnxruntime.

The graph is the one the tflite export converts (the model's serving signature, a softmax added to
logits unless ``output_scores`` is ``logits``, the input's normalization folded in where the export
takes another; converters/input_plan.py) with a dynamic batch: input ``image`` float32
[N, H, W, 3], output ``probability`` (or ``logits``) float32 [N, C], the names of the tflite
export's metadata. Labels, the input's normalization and what the scores are go in the model's
``metadata_props`` (exporter/core/onnx_model.py reads them), ``dict.txt`` beside it.

``quantization``: ``float32``; ``float16`` (onnxconverter-common: float16 weights and arithmetic,
float32 input and output); ``int8`` (onnxruntime's static quantization in QDQ form, int8 weights
per channel and int8 activations calibrated on the calibration images). ``int8`` takes raw 0..255
pixels like the tflite ``uint8`` export (its metadata says mean 0, std 1) and is held to the same
accuracy budget, with the remedies of converters/quantization_budget.py where onnxruntime has
them: more calibration images, activation ranges by onnxruntime's percentile and entropy
calibrators instead of min/max, the classifier head left in float, then the activations with the
largest quantization error left in float (converters/onnx/layer_errors.py ranks them, as TFLite's
debugger ranks its layers). ``onnx.checker`` passes on every artifact.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from converters import quantization_budget as budget
from converters.base import Converter, library_failure, register
from converters.input_plan import InputPlan, input_plan
from converters.load_scope import shared
from converters.modes import MODES, budget_tolerance
from converters.onnx import layer_errors
from converters.output_scores import ANY_BATCH_INPUT, any_batch_function, plan_scores
from converters.verification import compare, make_reference
from exporter.core import onnx_model as runtime
from exporter.core.labels import write_labels
from exporter.core.report import engine_version

MODEL_FILE = "model.onnx"
METADATA_FILE = "onnx_metadata.json"
INPUT_NAME = ANY_BATCH_INPUT
WEIGHTED_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose"}
RANGE_RULES = ("percentile", "entropy")  # onnxruntime's CalibrationMethod, after MinMax


def float_model(source, plan: InputPlan, add_softmax: bool, output_name: str, opset: int) -> bytes:
    """The float32 ONNX model of the export's graph (dynamic batch), once per ``shared_loads()`` scope."""

    def build() -> bytes:
        import tensorflow as tf
        import tf2onnx

        function, shape = any_batch_function(source, plan.to_model_input, add_softmax, output_name)
        spec = tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)
        try:
            proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=opset)
        except Exception as error:  # noqa: BLE001  (tf2onnx raises plain exceptions for unsupported ops)
            raise library_failure("tf2onnx", error) from None
        erfc_as_erf(proto)
        return proto.SerializeToString()

    where = str(Path(source.saved_model_dir).resolve())
    return shared(("onnx float", where, plan, add_softmax, output_name, opset), build)


def erfc_as_erf(model) -> int:
    """Every ``Erfc`` node tf2onnx passed through unconverted (ONNX has ``Erf``, no ``Erfc``: Keras
    3's exact GELU computes ``erfc``) becomes ``1 - Erf(x)``, the same values
    (converters/graph_rewrites.py says why); returns how many were rewritten."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph, nodes, rewritten = model.graph, [], 0
    one = "erfc_as_erf/one"
    for node in graph.node:
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        erf = f"{node.output[0]}/erf"
        nodes.append(helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}/erf"))
        nodes.append(helper.make_node("Sub", [one, erf], [node.output[0]], name=node.name))
        rewritten += 1
    if rewritten:
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def to_float16(model: bytes) -> bytes:
    """float16 weights and arithmetic; the input and output stay float32 (as consumers feed them)."""
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # one warning per weight below float16's smallest normal value
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(onnx.load_from_string(model), keep_io_types=True)
    return converted.SerializeToString()


def classifier_head(model: bytes) -> list[str]:
    """The names of the nodes from the last weighted node (the logits layer) to the output."""
    import onnx

    nodes = list(onnx.load_from_string(model).graph.node)  # tf2onnx writes them in topological order
    last = max((i for i, node in enumerate(nodes) if node.op_type in WEIGHTED_OPS), default=None)
    return [] if last is None else [node.name for node in nodes[last:]]


def quantize_int8(model: bytes, inputs: np.ndarray, recipe: budget.Recipe) -> bytes:
    """onnxruntime's static QDQ quantization of `model`, calibrated on float `inputs`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(inputs)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {INPUT_NAME: image[None]}

    method = {
        None: CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[recipe.range_rule]
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as scratch:
        plain, prepared, quantized = (Path(scratch) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        plain.write_bytes(model)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=method,
            nodes_to_exclude=list(recipe.float_layers),
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        return quantized.read_bytes()


def int8_within_budget(source, params, plan, model: bytes, scores_kind, reference) -> tuple[bytes, list[dict]]:
    """Plain int8, then the allowed remedies, each from the best try so far, until one passes."""
    pixels, mean, std = reference.images.pixels, plan.feed_mean, plan.feed_std
    quantizer = budget.RuntimeQuantizer(
        runtime="onnxruntime",
        quantize=lambda inputs, recipe: quantize_int8(model, inputs, recipe),
        scores=lambda candidate: runtime.scores(runtime.session(candidate), pixels, mean, std),
        latency=runtime.latency_ms,
        range_rules=RANGE_RULES,
        head=lambda: classifier_head(model),
        worst_layers=lambda candidate, inputs: layer_errors.worst_layers(candidate, inputs, INPUT_NAME),
    )
    tolerance = budget_tolerance("int8", params)
    return budget.search_within_budget(
        source, params, plan, reference, scores_kind, tolerance, f"{MODEL_FILE} (int8)", quantizer
    )


def with_metadata(model: bytes, source, plan: InputPlan, scores_kind: str, quantization: str) -> bytes:
    """`model` with the labels, the input's normalization and what the scores are in its metadata."""
    import onnx

    proto = onnx.load_from_string(model)
    props = {
        "labels": json.dumps(list(source.labels)),
        "image_mean": json.dumps(list(plan.feed_mean)),
        "image_std": json.dumps(list(plan.feed_std)),
        "input": json.dumps(plan.describe()),
        "scores": scores_kind,
        "quantization": quantization,
        "engine": engine_version(),
    }
    for value in [*proto.graph.input, *proto.graph.output]:  # tf2onnx names the dynamic batch unk__<n>
        first = value.type.tensor_type.shape.dim[0]
        if not first.HasField("dim_value"):
            first.dim_param = "batch"
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"{source.display_name}: image classifier, {quantization} ONNX export"
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


@register("onnx")
class ONNXConverter(Converter):
    libraries = ("tensorflow", "tf2onnx", "onnx", "onnxruntime")

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        quantization = params["quantization"]
        mode = MODES[quantization]
        plan = input_plan(source, integer=mode.integer)
        reference = make_reference(source) if mode.integer else make_reference(source, limit=32)
        scores_plan = plan_scores(params, reference.kind)
        scores_kind = scores_plan.are
        output_name = "logits" if scores_kind == "logits" else "probability"
        model = float_model(source, plan, scores_plan.softmax_added, output_name, int(params["opset"]))
        tries: list[dict] = []
        if quantization == "float16":
            model = to_float16(model)
        elif quantization == "int8":
            model, tries = int8_within_budget(source, params, plan, model, scores_kind, reference)
        model_path = workdir / MODEL_FILE
        model_path.write_bytes(with_metadata(model, source, plan, scores_kind, quantization))
        labels_path = write_labels(workdir, source.labels)
        run = runtime.session(model_path)
        metadata = {
            "quantization": quantization,
            "opset": int(params["opset"]),
            "inputs": [{"name": i.name, "shape": list(i.shape), "type": i.type} for i in run.get_inputs()],
            "outputs": [{"name": o.name, "shape": list(o.shape), "type": o.type} for o in run.get_outputs()],
            "input": plan.describe(),
            "scores": scores_plan.record(len(source.labels)),
        }
        if tries:
            metadata["quantizationTries"] = budget.tries_record(budget_tolerance(quantization, params), params, tries)
        metadata_path = workdir / METADATA_FILE
        metadata_path.write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        return [model_path, labels_path, metadata_path]

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        quantization = params["quantization"]
        model_path = workdir / MODEL_FILE
        embedded = runtime.read_metadata(model_path)
        # Fed as a consumer reads the model's own metadata: (pixel - image_mean) / image_std.
        scores = runtime.scores(
            runtime.session(model_path), reference.images.pixels, embedded["image_mean"], embedded["image_std"]
        )
        metadata = json.loads((workdir / METADATA_FILE).read_text())
        tries = metadata.get("quantizationTries", {}).get("tries", [])
        return {
            "verification": compare(
                "onnxruntime",
                reference,
                scores,
                budget_tolerance(quantization, params),
                what=f"{MODEL_FILE} ({quantization})",
                scores_kind=embedded.get("scores", reference.kind),
                remedies=tries[1:],
            )
        }
