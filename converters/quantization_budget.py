"""Full-integer quantization within an accuracy budget: a search over remedies that keeps its best try.

Plain post-training quantization (``uint8`` / ``int8``) sometimes flips more held-out images than
the budget allows. Before the export fails, these remedies are tried, in order, each measured
against the source on the held-out images. Each try starts from the best try so far (its
``builds_on``); a try that does no better is dropped, and the next starts from the best again:

1. ``calibration``: every calibration image (up to ``MAX_CALIBRATION``) instead of
   ``calibration_count``, so rarely reached activation ranges are seen;
2. ``ranges``: every activation's range chosen from its calibration histogram instead of its
   min/max, by each rule of converters/tflite/calibration_ranges.py (``mse``, then ``percentile``): a
   few outlier activations no longer stretch a tensor's 8-bit step for every other value;
3. ``float_head``: the classifier head (``classifier_head``: the output's ops back to the logits
   layer) kept in float, its output quantized again so the output stays integer: one 8-bit range
   for the logits of every class on every image can be too coarse for the softmax;
4. ``float_layers``: the layers TFLite's ``QuantizationDebugger`` finds worst (each quantized
   layer compared with its float twin on the calibration images, ranked by root-mean-square error
   / scale, as TensorFlow's debugger guide ranks them) added to the best try's float layers in
   groups of 1, 2, 4, ... up to ``MAX_FLOAT_LAYERS`` in all, while the input and output stay integer.
   The onnx and openvino searches (``search_within_budget``) rank their quantized activations in
   their own runtime instead (converters/onnx/layer_errors.py, converters/openvino/layer_errors.py).

A try is better when it passes, then when it flips fewer images, then when its scores are closer
to the source's. The search stops at the first try that passes; the best try is published (or,
when none passes, verified and reported). Each try records its flips, accuracy, size and latency
(measured here, one thread), so the report says what every remedy cost. ``edgetpu_tflite`` allows
the ``integer`` remedies only (calibration, ranges): the Edge TPU runs integer ops alone.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from exporter.core.errors import Code, ExportError

# What each value of the quantization_remedies param allows, in the order the search tries them.
REMEDY_STEPS = {
    "all": ("calibration", "ranges", "float_head", "float_layers"),
    "integer": ("calibration", "ranges"),  # every op stays integer (edgetpu_tflite)
    "calibration": ("calibration",),
    "none": (),
}
REMEDIES = tuple(REMEDY_STEPS)
MAX_CALIBRATION = 1000
MAX_FLOAT_LAYERS = 16
LATENCY_RUNS = 20  # invokes timed per try, after one warm-up


@dataclass(frozen=True)
class Recipe:
    """How one try's model is made: calibrated on `calibration_images` images, ranges chosen by
    `range_rule` (None: min/max), `float_layers` kept in float."""

    calibration_images: int
    range_rule: str | None = None
    float_layers: tuple[str, ...] = ()


def latency_ms(flatbuffer: bytes, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one invoke in ai_edge_litert, one thread, on a zero input."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def layers_by_error(converter, dataset: Callable) -> tuple[bytes, list[dict]]:
    """The calibrated model and its quantized layers, largest error first (TFLite's debugger).

    Returns the debugger's calibrated model (to quantize again with layers kept in float) and one
    entry per layer: its output tensor, op and RMSE / scale.
    """
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    debugger.run()
    # The layers at either end stay quantized: in float they would leave the model's input or output float.
    ends = _end_layers(debugger.calibrated_model)
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        if row["tensor_name"] in ends:
            continue
        scale = float(row["scale"])
        error = float(np.sqrt(float(row["mean_squared_error"])) / scale) if scale > 0 else 0.0
        layers.append({"tensor": row["tensor_name"], "op": row["op_name"], "rmse_over_scale": round(error, 4)})
    layers.sort(key=lambda layer: -layer["rmse_over_scale"])
    return debugger.calibrated_model, layers


def _end_layers(model: bytes) -> set[str]:
    """Output tensor names of the ops that read the model's input, and of the model's output."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=model)
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    ends = {d["name"] for d in interpreter.get_output_details()}
    for op in interpreter._get_ops_details():  # the graph's edges; no public API lists them
        if inputs & set(op["inputs"]):
            ends.update(tensors[i] for i in op["outputs"] if i in tensors)
    return ends


def quantize_with_float_layers(calibrated: bytes, io_type: str, float_layers: list[str]) -> bytes:
    """Full-integer model from the calibrated one, the named layers kept in float, integer input/output.

    The debugger's own ``get_nondebug_quantized_model`` leaves the input and output in float; as
    the converter itself does, the same quantizer call (``mlir_quantize``) is followed by
    ``modify_model_io_type``, which replaces the float input and output with integer ones. When the
    layer producing the output is one of the float layers (the classifier head), its float output is
    quantized again first (``_requantize_output``).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert, util

    quantized = convert.mlir_quantize(calibrated, denylisted_nodes=list(float_layers))  # float input and output
    quantized = _requantize_output(quantized, calibrated)
    dtype = getattr(tf, io_type)
    model = util.modify_model_io_type(quantized, inference_input_type=dtype, inference_output_type=dtype)
    interpreter = tf.lite.Interpreter(model_content=model)
    ends = interpreter.get_input_details() + interpreter.get_output_details()
    if any(detail["dtype"] != dtype.as_numpy_dtype for detail in ends):
        raise ExportError(
            Code.INTERNAL, f"keeping {len(float_layers)} layers in float left a non-{io_type} input or output"
        )
    return model


# Ops that carry a classifier's weights: the classifier head ends (walking back from the output) at one.
WEIGHTED_OPS = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"}
MAX_HEAD_OPS = 4


def classifier_head(calibrated: bytes) -> list[str]:
    """Output tensor names of the classifier head: the ops from the model's output back to, and
    including, the first op with weights (the logits layer), at most ``MAX_HEAD_OPS``.

    Its quantization is the one a single range cannot serve: the logits' range spans every class on
    every calibration image (briefly trained, EfficientNetB0's ran from -245 to 281, a step of 2.06
    at 8 bits), while the softmax needs the few units between one image's top classes. In float the
    head costs one small matrix product.
    """
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=calibrated)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    producers = {out: op for op in interpreter._get_ops_details() for out in op["outputs"]}
    (current,) = [d["index"] for d in interpreter.get_output_details()]
    head = []
    while current in producers and len(head) < MAX_HEAD_OPS:
        op = producers[current]
        head.append(names[current])
        if op["op_name"] in WEIGHTED_OPS:
            return head
        current = op["inputs"][0]
    return []  # no weighted op near the output: nothing to call a head


def _requantize_output(model_bytes: bytes, calibrated: bytes) -> bytes:
    """A float output made to look as a quantized model's does (QUANTIZE to int8, then DEQUANTIZE),
    so ``modify_model_io_type`` gives it the integer type; other models are returned unchanged.

    The int8 scale is TFLite's fixed one for a softmax output (1/256, zero point -128), otherwise
    the output's calibrated range.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(model_bytes)
    graph = model.subgraphs[0]
    (output,) = graph.outputs
    float_output = graph.tensors[output]
    if float_output.type != schema.TensorType.FLOAT32:
        return model_bytes
    scale, zero_point = _output_quantization(calibrated, model, output)

    def add_tensor(suffix: str, tensor_type: int, quantized: bool) -> int:
        tensor = schema.TensorT()
        tensor.name = _name(float_output) + suffix
        tensor.type = tensor_type
        tensor.shape, tensor.shapeSignature = float_output.shape, float_output.shapeSignature
        model.buffers.append(schema.BufferT())
        tensor.buffer = len(model.buffers) - 1
        if quantized:
            tensor.quantization = schema.QuantizationParametersT()
            tensor.quantization.scale, tensor.quantization.zeroPoint = [scale], [zero_point]
        graph.tensors.append(tensor)
        return len(graph.tensors) - 1

    def add_operator(builtin: int, source: int, target: int) -> None:
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
        if builtin not in codes:
            code = schema.OperatorCodeT()
            code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
            model.operatorCodes.append(code)
            codes.append(builtin)
        operator = schema.OperatorT()
        operator.opcodeIndex, operator.inputs, operator.outputs = codes.index(builtin), [source], [target]
        graph.operators.append(operator)

    int8_output = add_tensor("/int8", schema.TensorType.INT8, quantized=True)
    restored = add_tensor("/dequantized", schema.TensorType.FLOAT32, quantized=False)
    add_operator(schema.BuiltinOperator.QUANTIZE, output, int8_output)
    add_operator(schema.BuiltinOperator.DEQUANTIZE, int8_output, restored)
    graph.outputs = [restored]
    for signature in model.signatureDefs or []:
        for tensor_map in signature.outputs:
            if tensor_map.tensorIndex == output:
                tensor_map.tensorIndex = restored
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _output_quantization(calibrated: bytes, model, output: int) -> tuple[float, int]:
    """(scale, zero point) of the int8 output: a softmax's fixed one, or from the calibrated range."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    graph = model.subgraphs[0]
    producer = next(op for op in graph.operators if output in list(op.outputs))
    code = model.operatorCodes[producer.opcodeIndex]
    if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.SOFTMAX:
        return 1 / 256, -128
    name = _name(graph.tensors[output])
    tensors = flatbuffer_utils.convert_bytearray_to_object(calibrated).subgraphs[0].tensors
    ranged = next(t for t in tensors if _name(t) == name).quantization
    low, high = min(float(ranged.min[0]), 0.0), max(float(ranged.max[0]), 0.0)
    scale = (high - low) / 255 or 1.0
    return scale, int(np.clip(round(-128 - low / scale), -128, 127))


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def float_layer_groups(ranked: list, limit: int = MAX_FLOAT_LAYERS) -> list[list]:
    """The ranked layers in groups of 1, 2, 4, ... holding at most `limit` of them in all."""
    groups, start, size = [], 0, 1
    ranked = ranked[:limit]
    while start < len(ranked):
        groups.append(ranked[start : start + size])
        start, size = start + size, size * 2
    return groups


def _closeness(measured: dict) -> tuple:
    """Order of tries, best first: passing, fewer flips, scores closer to the source's."""
    return (not measured["passed"], measured["flips"], measured["mean_abs_diff"])


class Search:
    """The tries of one export: each made by `build(recipe)` and measured by `measure(flatbuffer)`.

    ``best`` is the best try so far, the one the next remedy starts from.
    """

    def __init__(
        self,
        build: Callable[[Recipe], bytes],
        measure: Callable[[bytes], dict],
        latency: Callable[[bytes], float] = latency_ms,  # a .tflite's by default; onnx passes its own
    ):
        self._build, self._measure, self._latency = build, measure, latency
        self.tries: list[dict] = []
        self._models: list[bytes] = []
        self._recipes: list[Recipe] = []
        self._best: int | None = None

    @property
    def best(self) -> Recipe:
        return self._recipes[self._best]

    @property
    def best_model(self):
        return self._models[self._best]

    @property
    def passed(self) -> bool:
        return self._best is not None and self.tries[self._best]["passed"]

    def attempt(self, remedy: str, recipe: Recipe) -> bool:
        """Make and measure one try; True when it became the best. Nothing is tried once one passed."""
        if self.passed:
            return False
        flatbuffer = self._build(recipe)
        measured = self._measure(flatbuffer)
        entry = {
            "remedy": remedy,
            "builds_on": self._best,
            "calibration_images": recipe.calibration_images,
            "range_rule": recipe.range_rule or "min_max",
            "float_layers": list(recipe.float_layers),
            **measured,
            "bytes": len(flatbuffer),
            "latency_ms": round(self._latency(flatbuffer), 3),
        }
        if self.tries:
            plain = self.tries[0]
            entry["cost"] = {
                "bytes": entry["bytes"] - plain["bytes"],
                "latency_ms": round(entry["latency_ms"] - plain["latency_ms"], 3),
            }
        improved = self._best is None or _closeness(measured) < _closeness(self.tries[self._best])
        entry["improved"] = improved
        self.tries.append(entry)
        self._models.append(flatbuffer)
        self._recipes.append(recipe)
        if improved:
            self._best = len(self.tries) - 1
        return improved

    def result(self) -> tuple[bytes, list[dict]]:
        """The best try's model, and every try with ``kept`` marking the one published."""
        for index, entry in enumerate(self.tries):
            entry["kept"] = index == self._best
        return self._models[self._best], self.tries


def with_budget(tolerance, params: dict[str, str]):
    """`tolerance` with its flip budget replaced by the ``max_disagreement`` param unless ``auto``."""
    value = params.get("max_disagreement", "auto")
    return tolerance if value == "auto" else replace(tolerance, max_disagreement_fraction=float(value))


def measured(runtime: str, reference, scores: np.ndarray, tolerance, scores_kind: str, what: str) -> dict:
    """What the verification would measure of one try's `scores` (it raises nothing)."""
    from converters.verification import VerificationFailed, compare  # verification is the heavier module

    try:
        check = compare(runtime, reference, scores, tolerance, what=what, scores_kind=scores_kind)
    except VerificationFailed as failed:
        check = failed.check
    return {
        "decided": check.decided,
        "agreeing": check.agreeing,
        "flips": check.decided - check.agreeing,
        "allowed": check.allowed_disagreements,
        "artifact_accuracy": check.artifact_accuracy,
        "source_accuracy": check.source_accuracy,
        "mean_abs_diff": round(check.mean_abs_diff, 6),
        "passed": check.passed,
    }


@dataclass(frozen=True)
class RuntimeQuantizer:
    """A runtime's own full-integer quantizer, as the shared search drives it (onnx, openvino).

    ``quantize(inputs, recipe)`` makes a try from float calibration `inputs`, ``scores(candidate)``
    runs it on the held-out pixels, ``latency(candidate)`` times one image on one thread;
    ``range_rules`` are its activation range estimators after min/max, ``head()`` the classifier
    head's node names to leave in float, ``worst_layers(candidate, inputs)`` the quantized layers
    of a try, largest quantization error on `inputs` first, each as the node names that keep it
    in float.
    """

    runtime: str
    quantize: Callable[[np.ndarray, Recipe], object]
    scores: Callable[[object], np.ndarray]
    latency: Callable[[object], float]
    range_rules: tuple[str, ...]
    head: Callable[[], list[str]]
    worst_layers: Callable[[object, np.ndarray], list[tuple[str, ...]]]


def search_within_budget(source, params: dict[str, str], plan, reference, scores_kind, tolerance, what, quantizer):
    """Plain quantization, then the remedies ``quantization_remedies`` allows, each from the best
    try so far, until one meets `tolerance`: every calibration image, each range rule, the head in
    float, then the layers with the largest quantization error on the best try's calibration
    images in float, in groups of 1, 2, 4, ... (``float_layer_groups``), each group added to the
    best try's. Returns (the best try, every try as the report records them). TFLite's own search
    (converters/tflite) ranks its layers with TFLite's debugger."""
    from converters.calibration import calibration_pixels
    from exporter.core.images import list_images

    pixels_by_count: dict[int, np.ndarray] = {}

    def pixels(images: int) -> np.ndarray:
        if images not in pixels_by_count:
            pixels_by_count[images] = calibration_pixels(source, images)
        return pixels_by_count[images]

    def build(recipe: Recipe):
        return quantizer.quantize(plan.feed(pixels(recipe.calibration_images)), recipe)

    def measure(candidate) -> dict:
        return measured(quantizer.runtime, reference, quantizer.scores(candidate), tolerance, scores_kind, what)

    steps = REMEDY_STEPS[params.get("quantization_remedies", "all")]
    images = len(list_images(source.calibration_dir))
    count, available = min(int(params["calibration_count"]), images), min(images, MAX_CALIBRATION)
    search = Search(build, measure, latency=quantizer.latency)
    search.attempt("plain", Recipe(count))
    if "calibration" in steps and available > count:
        search.attempt("calibration", replace(search.best, calibration_images=available))
    if "ranges" in steps:
        for rule in quantizer.range_rules:
            search.attempt("ranges", replace(search.best, range_rule=rule))
    if "float_head" in steps and not search.passed:
        layers = tuple(quantizer.head())
        if layers and not set(layers) <= set(search.best.float_layers):
            search.attempt("float_head", replace(search.best, float_layers=layers))
    if "float_layers" in steps and not search.passed:
        inputs = plan.feed(pixels(search.best.calibration_images))
        ranked = [
            layer
            for layer in quantizer.worst_layers(search.best_model, inputs)
            if not set(layer) <= set(search.best.float_layers)
        ]
        for group in float_layer_groups(ranked):
            if search.passed:
                break
            nodes = dict.fromkeys(node for layer in group for node in layer if node not in search.best.float_layers)
            search.attempt("float_layers", replace(search.best, float_layers=search.best.float_layers + tuple(nodes)))
    return search.result()


def tries_record(tolerance, params: dict[str, str], tries: list[dict]) -> dict:
    """What the format's metadata file records of the search (onnx, openvino)."""
    return {
        "maxDisagreement": tolerance.max_disagreement_fraction,
        "remediesAllowed": params.get("quantization_remedies", "all"),
        "tries": tries,
    }
