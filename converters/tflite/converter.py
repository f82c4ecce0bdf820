"""modelFormat ``tflite``: the TFLite converter, from the source's serving signature.

The batch is fixed to 1 (a mobile classifier takes one image; the Edge TPU compiler and MediaPipe
want static shapes): the serving signature is traced at batch 1 and saved once per
``shared_loads()`` scope as a SavedModel every mode converts from. ``uint8`` and ``int8`` are
full-integer quantization, sharing one calibration within a scope, with integer input and output
(``uint8`` as AutoML's QUANTIZED_UINT8 exports); they take raw 0..255 pixels whatever the model's
normalization, which is folded into the graph before quantizing (converters/input_plan.py).
Their representative dataset is the model's calibration images plus one of them with a black and a
white pixel, so the input's quantization covers the whole pixel range (scale 1, zero point 0 for
uint8; zero point -128 for int8, as MediaPipe feeds it). When plain quantization misses its budget,
remedies run before the export fails (converters/quantization_budget.py). ``float16`` and
``dynamic_range`` need no calibration.

A model whose output is logits gets a softmax at the end of the graph unless ``output_scores`` is
``logits`` (converters/output_scores.py); the metadata says which the output is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters import quantization_budget as budget
from converters.base import Converter, register
from converters.calibration import calibration_pixels
from converters.input_plan import InputPlan, consumer_scores, input_plan
from converters.load_scope import shared, shared_folder
from converters.output_scores import plan_scores, scores_function
from converters.signature import load_serving_signature
from converters.tflite import calibration_ranges as ranges
from converters.tflite.metadata import embed_metadata, read_metadata
from converters.verification import Tolerance, compare, make_reference
from exporter.core.errors import ExportError
from exporter.core.images import list_images
from exporter.core.labels import write_labels
from exporter.core.report import engine_version
from exporter.core.tflite_model import TFLiteModel

MODEL_FILE = "model.tflite"
METADATA_FILE = "tflite_metadata.json"


@dataclass(frozen=True)
class Mode:
    """One value of the ``quantization`` param: how to convert and how close it must stay."""

    inference_type: str  # tflite_metadata.json's inferenceType
    tolerance: Tolerance
    io_type: str | None = None  # integer input/output type of a full-integer model


MODES = {
    # The same arithmetic as the source: every decided image agrees, scores within rounding.
    "float32": Mode("FLOAT", Tolerance(0.0, max_abs_diff=1e-4)),
    # Weights stored as float16, computed in float32: rounding of the weights only.
    "float16": Mode("FLOAT", Tolerance(0.01, max_abs_diff=0.05)),
    # int8 weights, activations quantized on the fly; no calibration data.
    "dynamic_range": Mode("FLOAT", Tolerance(0.02, max_abs_diff=None)),
    # Full-integer: output steps of 1/256; on 360 held-out digits 2 images flipped.
    "uint8": Mode("QUANTIZED_UINT8", Tolerance(0.02, max_abs_diff=None), io_type="uint8"),
    "int8": Mode("QUANTIZED_INT8", Tolerance(0.02, max_abs_diff=None), io_type="int8"),
}


def representative_inputs(source, count: int, plan: InputPlan | None = None) -> np.ndarray:
    """Float calibration inputs, as the export's input takes them (default: the model's own)."""
    plan = plan or input_plan(source, integer=False)
    return plan.feed(calibration_pixels(source, count))


def budget_tolerance(quantization: str, params: dict[str, str]) -> Tolerance:
    """The mode's tolerance, its flip budget replaced by ``max_disagreement`` unless that is ``auto``."""
    return budget.with_budget(MODES[quantization].tolerance, params)


@contextmanager
def _converter(source, quantization: str, plan: InputPlan, add_softmax: bool, inputs: np.ndarray | None):
    """A TFLiteConverter of the export's batch-1 graph, set for `quantization` (calibrated on `inputs`)."""
    import tensorflow as tf

    with single_image_saved_model(source, plan, add_softmax) as saved_model:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if inputs is not None:
            converter.representative_dataset = lambda: ([x[None]] for x in inputs)
        yield converter


def single_image_saved_model(source, plan: InputPlan, add_softmax: bool):
    """Context: a SavedModel of the export's graph (input as `plan` feeds it, batch fixed to 1,
    softmax added or not), written once per ``shared_loads()`` scope for every mode to convert.

    What ``TFLiteConverter.from_concrete_functions`` does on each call (save the function as a
    SavedModel, convert from that), done once: each mode then converts as ``from_saved_model``
    does. Only the function and the variables it reads are saved, not the source's other functions.
    """
    import tensorflow as tf

    def write(folder: Path) -> None:
        serving = load_serving_signature(source.saved_model_dir)
        shape = [1, source.height, source.width, 3]
        single_image = scores_function(
            source, serving, shape, add_softmax=add_softmax, preprocess=plan.to_model_input
        ).get_concrete_function()
        holder = tf.Module()
        holder.variables_read = list(single_image.variables)  # tracked, so saved with the function
        tf.saved_model.save(holder, str(folder), signatures={"serving_default": single_image})

    where = str(Path(source.saved_model_dir).resolve())
    return shared_folder(("tflite single-image", where, plan, add_softmax), write)


def convert_to_tflite(
    source,
    quantization: str,
    calibration_count: int,
    *,
    add_softmax: bool = False,
    plan: InputPlan | None = None,
    pixels: np.ndarray | None = None,
) -> bytes:
    """The TFLite flatbuffer of the source's serving signature, batch fixed to 1.

    Full-integer modes take raw pixels (`plan` default); `pixels` replaces the calibration images.
    """
    mode = MODES[quantization]
    plan = plan or input_plan(source, integer=mode.io_type is not None)
    if mode.io_type is not None:
        pixels = calibration_pixels(source, calibration_count) if pixels is None else pixels
        return quantize_fully(calibrated_model(source, plan, add_softmax, pixels), mode.io_type)
    with _converter(source, quantization, plan, add_softmax, None) as converter:
        return converter.convert()


def calibrated_model(source, plan: InputPlan, add_softmax: bool, pixels: np.ndarray) -> bytes:
    """The float model with every tensor's range recorded on the calibration `pixels`.

    The TFLite converter's full-integer path is this calibration (the float model run on every
    calibration image: most of its time) followed by one quantizer call. The calibration does not
    depend on the integer type, so within a ``shared_loads()`` scope ``uint8`` and ``int8`` share it.
    """
    import tensorflow as tf

    def build() -> bytes:
        with _converter(source, "uint8", plan, add_softmax, plan.feed(pixels)) as converter:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter._experimental_calibrate_only = True  # as TFLite's QuantizationDebugger calibrates
            return converter.convert()

    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    where = str(Path(source.saved_model_dir).resolve())
    return shared(("tflite-calibrated", where, plan, add_softmax, digest), build)


def quantize_fully(calibrated: bytes, io_type: str) -> bytes:
    """The full-integer model with `io_type` input and output, from the calibrated one.

    The converter's own quantizer call on its calibrated model (``mlir_quantize`` with the integer
    input and output types, then its read-only buffer deduplication): the same operators, tensors,
    quantization and weights as ``TFLiteConverter.convert()`` returns for the same calibration, the
    metadata in another order (tests/test_tflite_export.py).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert

    dtype = getattr(tf, io_type)
    quantized = convert.mlir_quantize(calibrated, input_data_type=dtype, output_data_type=dtype)
    return convert.deduplicate_readonly_buffers(quantized)


def metadata_json(model: TFLiteModel, quantization: str) -> dict:
    """tflite_metadata.json: AutoML's object-detection keys, where they apply to a classifier."""

    def tensor(details: dict) -> dict:
        scale, zero_point = details["quantization"]
        return {
            "name": details["name"],
            "shape": [int(d) for d in details["shape"]],
            "dtype": np.dtype(details["dtype"]).name,
            "quantization": {"scale": float(scale), "zeroPoint": int(zero_point)},
        }

    return {
        "inferenceType": MODES[quantization].inference_type,
        "inputShape": [int(d) for d in model.input["shape"]],
        "inputTensor": model.input["name"],
        "outputTensorRepresentation": ["scores"],
        "outputTensors": [model.output["name"]],
        "tensors": {"input": tensor(model.input), "output": tensor(model.output)},
    }


def _artifact_scores(flatbuffer: bytes, pixels: np.ndarray, plan: InputPlan) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="tflite-try-") as scratch:
        path = Path(scratch) / MODEL_FILE
        path.write_bytes(flatbuffer)
        return consumer_scores(TFLiteModel(path), pixels, plan.feed_mean, plan.feed_std)


def _measure(flatbuffer, reference, plan, tolerance, scores_kind, what) -> dict:
    """What the verification would measure of one candidate (it raises nothing)."""
    scores = _artifact_scores(flatbuffer, reference.images.pixels, plan)
    return budget.measured("ai_edge_litert", reference, scores, tolerance, scores_kind, what)


def quantize_within_budget(
    source, quantization: str, params: dict[str, str], plan, add_softmax, scores_kind, reference
):
    """The full-integer model: plain quantization, then the allowed remedies, each from the best
    try so far, until one meets the budget (converters/quantization_budget.py).

    Returns (flatbuffer, the tries as the report records them). When none meets it, the best try is
    kept and the verification then fails, naming every try.
    """
    tolerance = budget_tolerance(quantization, params)
    steps = budget.REMEDY_STEPS[params.get("quantization_remedies", "calibration")]
    count = int(params["calibration_count"])
    io_type = MODES[quantization].io_type
    what = f"{MODEL_FILE} ({quantization})"
    pixels_by_count: dict[int, np.ndarray] = {}
    histograms_by_count: dict[int, dict] = {}

    def pixels(images: int) -> np.ndarray:
        if images not in pixels_by_count:
            pixels_by_count[images] = calibration_pixels(source, images)
        return pixels_by_count[images]

    def calibrated(recipe: budget.Recipe) -> bytes:
        model = calibrated_model(source, plan, add_softmax, pixels(recipe.calibration_images))
        if recipe.range_rule is None:
            return model
        if recipe.calibration_images not in histograms_by_count:
            inputs = plan.feed(pixels(recipe.calibration_images))
            histograms_by_count[recipe.calibration_images] = ranges.activation_histograms(model, inputs)
        histograms = histograms_by_count[recipe.calibration_images]
        return ranges.with_ranges(model, ranges.chosen_ranges(histograms, recipe.range_rule))

    def build(recipe: budget.Recipe) -> bytes:
        if recipe.float_layers:
            return budget.quantize_with_float_layers(calibrated(recipe), io_type, list(recipe.float_layers))
        return quantize_fully(calibrated(recipe), io_type)

    def measure(flatbuffer: bytes) -> dict:
        return _measure(flatbuffer, reference, plan, tolerance, scores_kind, what)

    search = budget.Search(build, measure)
    search.attempt("plain", budget.Recipe(len(pixels(count)) - 1))  # the count less the range anchor
    available = min(len(list_images(source.calibration_dir)), budget.MAX_CALIBRATION)
    if "calibration" in steps and available > count:
        search.attempt("calibration", dataclasses.replace(search.best, calibration_images=available))
    if "ranges" in steps:
        for rule in ranges.RULES:
            search.attempt("ranges", dataclasses.replace(search.best, range_rule=rule))
    if "float_head" in steps and not search.passed:
        head = tuple(budget.classifier_head(calibrated(search.best)))
        if head and not set(head) <= set(search.best.float_layers):
            _attempt_float(search, "float_head", head)
    if "float_layers" in steps and not search.passed:
        for group in _worst_layers(source, quantization, plan, add_softmax, pixels(search.best.calibration_images)):
            if search.passed or not _attempt_float(search, "float_layers", tuple(group)):
                break
    return search.result()


def _attempt_float(search: budget.Search, remedy: str, layers: tuple[str, ...]) -> bool:
    """One try with `layers` kept in float as well as the best try's; False when that cannot keep
    the input and output integer (the layers reach them), so no further layers are worth trying."""
    added = tuple(layer for layer in layers if layer not in search.best.float_layers)
    if not added:
        return True  # already in float in the best try: nothing new to measure
    kept = search.best.float_layers + added
    try:
        search.attempt(remedy, dataclasses.replace(search.best, float_layers=kept))
    except ExportError:
        return False
    return True


def _worst_layers(source, quantization, plan, add_softmax, pixels) -> list[list[str]]:
    """The quantized layers by TFLite's debugger, worst first, in groups of 1, 2, 4, ..."""
    inputs = plan.feed(pixels)
    with _converter(source, quantization, plan, add_softmax, inputs) as converter:
        _, layers = budget.layers_by_error(converter, lambda: ([x[None]] for x in inputs))
    return budget.float_layer_groups([layer["tensor"] for layer in layers])


@register("tflite")
class TFLiteConverter(Converter):
    libraries = ("tensorflow",)

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        quantization = params["quantization"]
        mode = MODES[quantization]
        plan = input_plan(source, integer=mode.io_type is not None)
        # What the model outputs, on the held-out images (all of them when tries are measured).
        reference = make_reference(source) if mode.io_type is not None else make_reference(source, limit=32)
        scores_plan = plan_scores(params, reference.kind)
        scores_kind, add_softmax = scores_plan.are, scores_plan.softmax_added
        tries = []
        if mode.io_type is not None:
            flatbuffer, tries = quantize_within_budget(
                source, quantization, params, plan, add_softmax, scores_kind, reference
            )
        else:
            flatbuffer = convert_to_tflite(source, quantization, 0, add_softmax=add_softmax, plan=plan)
        flatbuffer = embed_metadata(
            flatbuffer,
            source,
            description=f"{source.display_name}: image classifier, {quantization} TFLite export",
            version=engine_version(),
            mean=plan.feed_mean,
            std=plan.feed_std,
            scores_kind=scores_kind,
        )
        model_path = workdir / MODEL_FILE
        model_path.write_bytes(flatbuffer)
        labels_path = write_labels(workdir, source.labels)
        metadata_path = workdir / METADATA_FILE
        metadata = metadata_json(TFLiteModel(model_path), quantization)
        metadata["input"] = plan.describe()
        metadata["scores"] = scores_plan.record(len(source.labels))
        if tries:
            tolerance = budget_tolerance(quantization, params)
            metadata["quantization"] = {
                "maxDisagreement": tolerance.max_disagreement_fraction,
                "remediesAllowed": params.get("quantization_remedies", "calibration"),
                "maxFloatLayers": budget.MAX_FLOAT_LAYERS,
                "floatLayers": next(t["float_layers"] for t in tries if t["kept"]),
                "rangeRule": next(t["range_rule"] for t in tries if t["kept"]),
                "tries": tries,
            }
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
        return [model_path, labels_path, metadata_path]

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        quantization = params["quantization"]
        model_path = workdir / MODEL_FILE
        embedded = read_metadata(model_path.read_bytes())
        # Fed as MediaPipe feeds it: raw pixels to an integer input, the metadata's mean/std to a float one.
        scores = consumer_scores(TFLiteModel(model_path), reference.images.pixels, embedded["mean"], embedded["std"])
        metadata = json.loads((workdir / METADATA_FILE).read_text())
        tries = metadata.get("quantization", {}).get("tries", [])
        return {
            "verification": compare(
                "ai_edge_litert",
                reference,
                scores,
                budget_tolerance(quantization, params),
                what=f"{MODEL_FILE} ({quantization})",
                scores_kind=metadata.get("scores", {}).get("are", reference.kind),
                remedies=tries[1:],
            )
        }
