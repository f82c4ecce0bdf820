"""modelFormat ``openvino``: OpenVINO IR (``model.xml`` + ``model.bin``) from the export's graph,
verified with the OpenVINO runtime on the CPU.

The graph is the one the onnx export converts (the serving signature, a softmax added to logits
unless ``output_scores`` is ``logits``, the input's normalization folded in where the export takes
another) with a dynamic batch, saved as a SavedModel and read by ``openvino.convert_model``: input
``image`` float32 [N, H, W, 3], output ``probability`` (or ``logits``) [N, C]. Labels, the input's
normalization and what the scores are go in the IR's ``rt_info`` (exporter/core/openvino_model.py
reads them), ``dict.txt`` beside it.

``quantization``: ``float32``; ``float16`` (weights stored as float16, ``compress_to_fp16``);
``int8`` (NNCF post-training quantization, calibrated on the calibration images, raw 0..255
pixels in like the tflite ``uint8`` export), held to the same accuracy budget with the remedies
NNCF offers: more calibration images, activation ranges by mean quantiles instead of min/max, the
classifier head left in float (NNCF's ignored scope), then the activations with the largest
quantization error left in float (converters/openvino/layer_errors.py ranks them).

Verification compiles the IR with ``INFERENCE_PRECISION_HINT`` f32. Where the CPU plugin's own
default is another precision (bfloat16 on CPUs with AMX or AVX512_BF16), what a user gets by
default is verified too (``cpu_default_precision``), held to the full-integer budget.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from converters import quantization_budget as budget
from converters.base import Converter, library_failure, register
from converters.input_plan import InputPlan, input_plan
from converters.load_scope import shared, shared_folder
from converters.modes import MODES, budget_tolerance
from converters.openvino import layer_errors
from converters.output_scores import ANY_BATCH_INPUT, any_batch_function, plan_scores
from converters.verification import Tolerance, compare, make_reference
from exporter.core import openvino_model as runtime
from exporter.core.labels import write_labels
from exporter.core.report import engine_version

MODEL_FILE = "model.xml"
METADATA_FILE = "openvino_metadata.json"
INPUT_NAME = ANY_BATCH_INPUT
WEIGHTED_OPS = {"MatMul", "Convolution", "GroupConvolution"}
RANGE_RULES = ("mean_quantile",)  # NNCF's RangeEstimatorParametersSet, after its min/max default
# What a user's default CPU precision (bfloat16 where the CPU has it) is held to: the budget of a
# full-integer export, as bfloat16 keeps 8 bits of mantissa.
DEFAULT_PRECISION_TOLERANCE = Tolerance(0.02, max_abs_diff=None)


class Candidate:
    """One try's model: the OpenVINO model and the bytes its IR takes (``len``)."""

    def __init__(self, model, compress_to_fp16: bool = False):
        import openvino

        self.model = model
        with tempfile.TemporaryDirectory(prefix="openvino-size-") as scratch:
            path = Path(scratch) / MODEL_FILE
            openvino.save_model(model, str(path), compress_to_fp16=compress_to_fp16)
            self.size = path.stat().st_size + path.with_suffix(".bin").stat().st_size

    def __len__(self) -> int:
        return self.size


def export_graph_folder(source, plan: InputPlan, add_softmax: bool, output_name: str):
    """Context: the export's graph (dynamic batch) as a SavedModel, once per ``shared_loads()`` scope."""

    def write(folder: Path) -> None:
        import tensorflow as tf

        function = any_batch_function(source, plan.to_model_input, add_softmax, output_name)[0].get_concrete_function()
        holder = tf.Module()
        holder.variables_read = list(function.variables)
        tf.saved_model.save(holder, str(folder), signatures={"serving_default": function})

    where = str(Path(source.saved_model_dir).resolve())
    return shared_folder(("openvino graph", where, plan, add_softmax, output_name), write)


def pruned_graph(source, plan: InputPlan, add_softmax: bool, output_name: str):
    """The export's graph frozen (variables as constants, functions inlined) and pruned to what the
    output needs, as a GraphDef."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = any_batch_function(source, plan.to_model_input, add_softmax, output_name)[0].get_concrete_function()
    frozen = convert_variables_to_constants_v2(function)
    return tf.compat.v1.graph_util.extract_sub_graph(
        frozen.graph.as_graph_def(), [tensor.op.name for tensor in frozen.outputs]
    )


def float_model(source, plan: InputPlan, add_softmax: bool, output_name: str):
    """The float32 OpenVINO model of the export's graph, input and output named.

    The graph is read from a SavedModel, as OpenVINO reads a model's own. Where OpenVINO's
    TensorFlow frontend cannot translate one of its functions (a model that takes encoded images
    keeps its decoding loop in the function the classifier was cut from, and the frontend refuses
    the loop's ``Switch``), the graph frozen and pruned to what the output needs is read instead.
    """

    def build():
        import openvino

        with export_graph_folder(source, plan, add_softmax, output_name) as folder:
            try:
                model = openvino.convert_model(str(folder))
            except Exception as error:  # noqa: BLE001  (the frontends raise their own types)
                try:
                    model = openvino.convert_model(pruned_graph(source, plan, add_softmax, output_name))
                except Exception:  # noqa: BLE001  (the first failure is the one that explains)
                    raise library_failure("openvino", error) from None
        model.inputs[0].get_tensor().set_names({INPUT_NAME})
        model.outputs[0].get_tensor().set_names({output_name})
        return model

    where = str(Path(source.saved_model_dir).resolve())
    return shared(("openvino float", where, plan, add_softmax, output_name), build)


def classifier_head(model) -> list[str]:
    """The friendly names of the ops from the last weighted op (the logits layer) to the output."""
    ops = list(model.get_ordered_ops())
    last = max((i for i, op in enumerate(ops) if op.get_type_name() in WEIGHTED_OPS), default=None)
    if last is None:
        return []
    return [op.get_friendly_name() for op in ops[last:] if op.get_type_name() not in ("Result", "Constant")]


def quantize_int8(model, inputs: np.ndarray, recipe: budget.Recipe):
    """NNCF's post-training quantization of `model`, calibrated on float `inputs`."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = None
    if recipe.range_rule == "mean_quantile":
        advanced = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MEAN_QUANTILE
        )
    ignored = nncf.IgnoredScope(names=list(recipe.float_layers)) if recipe.float_layers else None
    try:
        # NNCF draws progress bars and logs on the standard streams, where `exporter export --json`
        # writes its answer: kept off them.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return nncf.quantize(
                model.clone(),
                nncf.Dataset([image[None] for image in inputs]),
                subset_size=len(inputs),
                ignored_scope=ignored,
                advanced_parameters=advanced,
            )
    except Exception as error:  # noqa: BLE001  (NNCF raises plain exceptions for what it cannot quantize)
        raise library_failure("nncf", error) from None


def int8_within_budget(source, params, plan, model, scores_kind, reference):
    """Plain int8, then the allowed remedies, each from the best try so far, until one passes."""
    pixels, mean, std = reference.images.pixels, plan.feed_mean, plan.feed_std
    quantizer = budget.RuntimeQuantizer(
        runtime="openvino",
        quantize=lambda inputs, recipe: Candidate(quantize_int8(model, inputs, recipe)),
        scores=lambda candidate: runtime.scores(runtime.compile_model(candidate.model), pixels, mean, std),
        latency=lambda candidate: runtime.latency_ms(runtime.compile_model(candidate.model, threads=1)),
        range_rules=RANGE_RULES,
        head=lambda: classifier_head(model),
        worst_layers=lambda candidate, inputs: layer_errors.worst_layers(candidate.model, inputs),
    )
    tolerance = budget_tolerance("int8", params)
    best, tries = budget.search_within_budget(
        source, params, plan, reference, scores_kind, tolerance, f"{MODEL_FILE} (int8)", quantizer
    )
    return best.model, tries


def set_metadata(model, source, plan: InputPlan, scores_kind: str, quantization: str) -> None:
    values = {
        "labels": json.dumps(list(source.labels)),
        "image_mean": json.dumps(list(plan.feed_mean)),
        "image_std": json.dumps(list(plan.feed_std)),
        "scores": scores_kind,
        "quantization": quantization,
        "inference_precision": runtime.F32,
        "engine": engine_version(),
    }
    for key, value in values.items():
        model.set_rt_info(value, [runtime.SECTION, key])


@register("openvino")
class OpenVINOConverter(Converter):
    libraries = ("tensorflow", "openvino")

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        import openvino

        quantization = params["quantization"]
        mode = MODES[quantization]
        plan = input_plan(source, integer=mode.integer)
        reference = make_reference(source) if mode.integer else make_reference(source, limit=32)
        scores_plan = plan_scores(params, reference.kind)
        scores_kind = scores_plan.are
        output_name = "logits" if scores_kind == "logits" else "probability"
        model = float_model(source, plan, scores_plan.softmax_added, output_name)
        tries: list[dict] = []
        if quantization == "int8":
            model, tries = int8_within_budget(source, params, plan, model, scores_kind, reference)
        else:
            model = model.clone()  # the metadata below is this export's, not the shared float model's
        set_metadata(model, source, plan, scores_kind, quantization)
        model_path = workdir / MODEL_FILE
        openvino.save_model(model, str(model_path), compress_to_fp16=quantization == "float16")
        labels_path = write_labels(workdir, source.labels)
        metadata = {
            "quantization": quantization,
            "openvino": openvino.__version__,
            "inputs": [{"name": i.get_any_name(), "shape": str(i.get_partial_shape())} for i in model.inputs],
            "outputs": [{"name": o.get_any_name(), "shape": str(o.get_partial_shape())} for o in model.outputs],
            "input": plan.describe(),
            "scores": scores_plan.record(len(source.labels)),
            "inferencePrecision": runtime.F32,
        }
        if tries:
            metadata["quantizationTries"] = budget.tries_record(budget_tolerance(quantization, params), params, tries)
        metadata_path = workdir / METADATA_FILE
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
        return [model_path, model_path.with_suffix(".bin"), labels_path, metadata_path]

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        quantization = params["quantization"]
        model = runtime.read_model(workdir / MODEL_FILE)
        embedded = runtime.read_metadata(model)
        mean, std = embedded["image_mean"], embedded["image_std"]
        kind = embedded.get("scores", reference.kind)
        metadata = json.loads((workdir / METADATA_FILE).read_text())
        tries = metadata.get("quantizationTries", {}).get("tries", [])
        checks = {
            "verification": compare(
                "openvino",
                reference,
                runtime.scores(runtime.compile_model(model), reference.images.pixels, mean, std),
                budget_tolerance(quantization, params),
                what=f"{MODEL_FILE} ({quantization}, {runtime.F32})",
                scores_kind=kind,
                remedies=tries[1:],
            )
        }
        default = runtime.default_precision()
        if default != runtime.F32:
            checks["cpu_default_precision"] = compare(
                "openvino",
                reference,
                runtime.scores(runtime.compile_model(model, precision=None), reference.images.pixels, mean, std),
                DEFAULT_PRECISION_TOLERANCE,
                what=f"{MODEL_FILE} ({quantization}, the CPU's default {default})",
                scores_kind=kind,
                note=f"what a user gets without INFERENCE_PRECISION_HINT on this CPU: {default}",
            )
        return checks
