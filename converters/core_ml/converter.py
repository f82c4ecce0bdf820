"""modelFormat ``core_ml``: coremltools from the SavedModel's serving_default concrete function.

The input is an ``ImageType`` (RGB, the model's size) whose scale and bias apply the manifest's
normalization: Core ML computes ``scale * pixel + bias`` with one scale for all channels and a bias
per channel. Where the manifest's std differs per channel, the bias still subtracts each channel's
mean, the scale divides by the channels' average std, and the graph multiplies each channel by
average / std before the model (the fold, ``input_plan``): the model sees the manifest's
``(pixel - mean) / std``. Before conversion the folded graph runs in TensorFlow on held-out images,
fed what the image input makes of their pixels, against the source fed the manifest's normalization
by hand; the model's metadata (``inputFold``) and the spec check say what was folded. The classifier
carries the labels (``classLabel`` and a probabilities dictionary). Core ML cannot predict on Linux:
verification checks the saved spec for real and loads the model back; numerical parity runs only
where Core ML can predict (macOS).

A model whose output is logits gets a softmax at the end of the graph before conversion unless
``output_scores`` is ``logits`` (converters/output_scores.py), so the classifier's probabilities
dictionary (what Vision reports as each label's confidence) holds probabilities. The model says
which its scores are in that output's description (what Xcode shows) and in its user-defined
metadata (``scores``); the spec check reads them back and checks them against the op that
computes the dictionary.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from converters.base import Converter, library_failure, register
from converters.graph_rewrites import for_converters, needs_rewrite
from converters.input_plan import InputPlan
from converters.output_scores import (
    KIND_SAMPLE,
    LOGITS,
    ScoresPlan,
    describe,
    plan_for,
    recorded_kind,
    scores_function,
)
from converters.signature import load_serving_signature
from converters.verification import CheckReport, Tolerance, Verification, compare, make_reference
from exporter.core.errors import Code, ExportError
from exporter.core.labels import write_labels
from exporter.core.report import engine_version

INPUT_NAME = "image"
TOLERANCES = {"float32": Tolerance(0.0, max_abs_diff=1e-3), "float16": Tolerance(0.01, max_abs_diff=0.05)}
# The layer (neural network) or op (ML program) types that make a softmax.
SOFTMAX_TYPES = ("softmax", "softmaxND")
# The folded graph against the source, both in float32 TensorFlow: only rounding may differ.
FOLD_TOLERANCE = Tolerance(0.0, max_abs_diff=1e-4)
# The user-defined metadata entry that says what the graph folds (absent where nothing is folded).
FOLD_KEY = "inputFold"


def artifact_name(params: dict[str, str]) -> str:
    return "model.mlpackage" if params["model_type"] == "mlprogram" else "model.mlmodel"


def deployment_target(params: dict[str, str]) -> str:
    target = params["minimum_deployment_target"]
    if target == "auto":
        return "iOS15" if params["model_type"] == "mlprogram" else "iOS13"
    return target


def input_plan(source) -> InputPlan:
    """What the image input applies (``feed``) and what the model expects (``model``).

    The bias takes the manifest's mean per channel and the one scale its std; where the std
    differs per channel the scale divides by the channels' average (the values stay in the model's
    range) and the graph multiplies each channel by average / std (``InputPlan.to_model_input``).
    """
    mean, std = tuple(source.mean), tuple(source.std)
    one_std = std if len(set(std)) == 1 else (float(np.mean(std)),) * 3
    return InputPlan(mean, std, mean, one_std)


def image_scaling(plan: InputPlan) -> tuple[float, list[float]]:
    """Core ML's (scale, per-channel bias) for the plan's fed ``(pixel - mean) / std``."""
    scale = 1.0 / plan.feed_std[0]
    return scale, [-m * scale for m in plan.feed_mean]


def image_input(pixels: np.ndarray, plan: InputPlan) -> np.ndarray:
    """What the Core ML image input hands the graph for 0..255 `pixels`: ``scale * pixel + bias``."""
    scale, bias = image_scaling(plan)
    return (pixels.astype(np.float32) * np.float32(scale) + np.asarray(bias, np.float32)).astype(np.float32)


def fold_record(plan: InputPlan) -> dict:
    """What the metadata and the report say of the fold."""
    scale, bias = image_scaling(plan)
    graph_scale, graph_offset = plan.affine()
    return {
        **plan.describe(),
        "imageScale": scale,
        "imageBias": bias,
        "graphScale": [float(v) for v in graph_scale],
        "graphOffset": [float(v) for v in graph_offset],
    }


def check_fold(source, serve, plan: InputPlan, scores: ScoresPlan) -> Verification:
    """The graph to convert, fed what the image input makes of held-out pixels, against the source
    fed the manifest's normalization by hand (the reference): a wrong fold (channels swapped, the
    mean applied twice) or rewrite (converters/graph_rewrites.py) fails here, before conversion, as
    no Core ML run checks it on Linux."""
    import tensorflow as tf

    reference = make_reference(source, limit=KIND_SAMPLE)  # the images plan_for ran the source on
    fed = image_input(reference.images.pixels, plan)
    rows = [next(iter(serve(tf.constant(image[None])).values())).numpy()[0] for image in fed]
    return compare(
        "tensorflow",
        reference,
        np.asarray(rows, np.float32),
        FOLD_TOLERANCE,
        what="the graph coremltools converts (normalization folded in, operations rewritten)",
        scores_kind=scores.are,
    )


def graph_to_convert(source, serving, plan: InputPlan, scores: ScoresPlan):
    """The concrete function coremltools converts: the serving signature, with the fold before it
    and the softmax after it where the plans ask for them, and wrapped (one float input, the scores
    out) where the signature takes uint8 pixels or has several outputs."""
    if not (plan.folded or scores.softmax_added) and source.plain_signature:
        return serving.function
    shape = [1, source.height, source.width, 3]
    preprocess = plan.to_model_input if plan.folded else None
    wrapped = scores_function(source, serving, shape, add_softmax=scores.softmax_added, preprocess=preprocess)
    return wrapped.get_concrete_function()


def translate_uint8_casts() -> None:
    """Let coremltools translate TensorFlow's Cast to uint8, which it refuses ("destination type uint8
    not supported"), as a cast to int32.

    A model whose signature takes uint8 pixels is converted through a wrapper that rounds and clips
    the float image to 0..255 and casts it to uint8 for the model's own graph, which casts it back to
    float: every value is a whole number in 0..255, so int32 holds it exactly. Other casts are left to
    coremltools' own translation. Registered once per process.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY, register_tf_op
    from coremltools.converters.mil.mil import types

    stock = _TF_OPS_REGISTRY["Cast"]
    if getattr(stock, "uint8_as_int32", False):
        return

    def Cast(context, node):  # noqa: N802 (coremltools registers a translation by the op's name)
        if node.attr["DstT"] != types.uint8:
            return stock(context, node)
        context.add(node.name, mb.cast(x=context[node.inputs[0]], dtype="int32", name=node.name))

    Cast.uint8_as_int32 = True
    register_tf_op(Cast, override=True)


def convert_to_coreml(source, params: dict[str, str], scores: ScoresPlan):
    import coremltools as ct

    if source.input_dtype == "uint8":
        translate_uint8_casts()
    serving = load_serving_signature(source.saved_model_dir)  # must outlive the conversion
    plan = input_plan(source)
    serve = graph_to_convert(source, serving, plan, scores)
    rewritten = needs_rewrite(source.saved_model_dir)  # an op coremltools lacks (Erfc)
    if rewritten:
        serve = for_converters(serve)
    fold = None
    if plan.folded or rewritten:
        checked = check_fold(source, serve, plan, scores)
    if plan.folded:
        fold = {**fold_record(plan), "checked": {"images": checked.images, "maxAbsDiff": checked.max_abs_diff}}
    scale, bias = image_scaling(plan)
    image = ct.ImageType(
        name=source.input_key,
        shape=(1, source.height, source.width, 3),
        scale=scale,
        bias=bias,
        color_layout=ct.colorlayout.RGB,
    )
    options = {}
    if params["model_type"] == "mlprogram":
        options["compute_precision"] = (
            ct.precision.FLOAT16 if params["precision"] == "float16" else ct.precision.FLOAT32
        )
    try:
        model = ct.convert(
            [serve],
            source="tensorflow",
            inputs=[image],
            convert_to=params["model_type"],
            classifier_config=ct.ClassifierConfig(list(source.labels)),
            minimum_deployment_target=getattr(ct.target, deployment_target(params)),
            **options,
        )
    except (ValueError, NotImplementedError, TypeError, RuntimeError) as error:  # its refusals
        raise library_failure("coremltools", error) from error
    if params["model_type"] == "neuralnetwork" and params["precision"] == "float16":
        from coremltools.models.neural_network import quantization_utils

        model = quantization_utils.quantize_weights(model, nbits=16)
    if source.input_key != INPUT_NAME:
        spec = model.get_spec()
        ct.utils.rename_feature(spec, source.input_key, INPUT_NAME)
        model = ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)
    model.author = "automl-export-engine"
    model.short_description = f"{source.display_name}: image classifier ({len(source.labels)} labels)"
    model.version = engine_version()
    model.user_defined_metadata["labels"] = json.dumps(list(source.labels))
    model.user_defined_metadata["normalization"] = json.dumps({"mean": list(source.mean), "std": list(source.std)})
    model.user_defined_metadata["scores"] = json.dumps(scores.record(len(source.labels)))
    if fold is not None:
        model.user_defined_metadata[FOLD_KEY] = json.dumps(fold)
    probabilities = model.get_spec().description.predictedProbabilitiesName
    model.output_description[probabilities] = f"{describe(scores.are, len(source.labels))}, by label"
    return model


def _const_values(block, name: str) -> list[float]:
    """The values of a MIL const op's output `name` (float32 or float16 immediate values)."""
    for op in block.operations:
        if op.type == "const" and op.outputs[0].name == name:
            tensor = op.attributes["val"].immediateValue.tensor
            if tensor.floats.values:
                return list(tensor.floats.values)
            raw = tensor.bytes.values
            return list(np.frombuffer(raw, dtype=np.float16).astype(np.float32))
    return []


def _program_image_steps(block) -> tuple[dict, str]:
    """The ImageType's own ops in an ML program ({"scale": mul, "bias": add}, each absent where
    coremltools left it out) and the name of what they hand the graph.

    coremltools names them after the input it converted (``<key>__scaled__``, ``<key>__biased__``);
    renaming the input to ``image`` leaves those names, so they are found by what they take.
    """
    steps, last = {}, INPUT_NAME
    for op in block.operations:
        output = op.outputs[0].name if op.outputs else ""
        takes_last = "x" in op.inputs and op.inputs["x"].arguments[0].name == last
        for kind, op_type, suffix in (("scale", "mul", "__scaled__"), ("bias", "add", "__biased__")):
            if op.type == op_type and output.endswith(suffix) and takes_last:
                steps[kind], last = op, output
    return steps, last


def _image_preprocessing(spec) -> tuple[float | None, list[float]]:
    """(scale, bias) the saved model applies to its image input."""
    if spec.WhichOneof("Type") == "neuralNetworkClassifier":
        for step in spec.neuralNetworkClassifier.preprocessing:
            if step.featureName == INPUT_NAME and step.WhichOneof("preprocessor") == "scaler":
                s = step.scaler
                return s.channelScale or 1.0, [s.redBias, s.greenBias, s.blueBias]
        return 1.0, [0.0, 0.0, 0.0]
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    steps, _ = _program_image_steps(block)
    scale, bias = 1.0, [0.0, 0.0, 0.0]
    if "scale" in steps:
        scale = float(_const_values(block, steps["scale"].inputs["y"].arguments[0].name)[0])
    if "bias" in steps:
        values = [float(v) for v in _const_values(block, steps["bias"].inputs["y"].arguments[0].name)]
        bias = values * 3 if len(values) == 1 else values
    return scale, bias


def _nn_constant(network, name: str) -> list[float]:
    """The values of the neural network's loadConstantND layer whose output is `name`."""
    for layer in network.layers:
        if layer.WhichOneof("layer") == "loadConstantND" and name in layer.output:
            data = layer.loadConstantND.data
            if data.floatValue:
                return list(data.floatValue)
            return list(np.frombuffer(data.float16Value, dtype=np.float16).astype(np.float32))
    return []


def graph_scale(spec) -> list[float] | None:
    """The per-channel factor the graph multiplies the scaled image by (the fold), None where no
    op multiplies the image input by three constants."""
    if spec.WhichOneof("Type") == "neuralNetworkClassifier":
        network = spec.neuralNetworkClassifier
        for layer in network.layers:
            if layer.WhichOneof("layer") == "multiply" and INPUT_NAME in layer.input:
                (other,) = [name for name in layer.input if name != INPUT_NAME] or [""]
                values = _nn_constant(network, other)
                if len(values) == 3:
                    return [float(v) for v in values]
        return None
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    producers = {output.name: op for op in block.operations for output in op.outputs}
    _, scaled_image = _program_image_steps(block)
    for op in block.operations:
        if op.type != "mul" or "y" not in op.inputs:
            continue
        name = op.inputs["x"].arguments[0].name
        while name in producers and producers[name].type == "cast":  # float16 models cast the image first
            name = producers[name].inputs["x"].arguments[0].name
        values = _const_values(block, op.inputs["y"].arguments[0].name)
        if name == scaled_image and len(values) == 3:
            return [float(v) for v in values]
    return None


def _fold_numbers(record: dict) -> list[float]:
    """The numbers of a fold record that must match the manifest's, in a fixed order."""
    normalization = [*record["model"]["mean"], *record["model"]["std"], *record["feed"]["mean"], *record["feed"]["std"]]
    return [*normalization, *record["imageBias"], record["imageScale"], *record["graphScale"], *record["graphOffset"]]


def _fold_check(model, spec, source, problems: list[str]) -> dict | None:
    """What the saved model says its graph folds, checked against the manifest and the graph."""
    plan = input_plan(source)
    record = json.loads(model.user_defined_metadata.get(FOLD_KEY, "null"))
    if not plan.folded:
        if record is not None:
            problems.append(f"the metadata records a fold ({FOLD_KEY}) that the manifest's one std does not call for")
        return None
    if record is None:
        problems.append(f"the manifest's std {list(source.std)} differs per channel, but the metadata records no fold")
        return None
    expected = fold_record(plan)
    try:
        recorded = _fold_numbers(record)
    except (KeyError, TypeError):
        recorded = []
    if len(recorded) != len(_fold_numbers(expected)) or not np.allclose(recorded, _fold_numbers(expected)):
        problems.append(f"the metadata's fold {record} differs from the manifest's {expected}")
    in_graph = graph_scale(spec)
    # float16 models store the factor in float16 (a relative error up to 5e-4).
    if in_graph is None or not np.allclose(in_graph, expected["graphScale"], rtol=1e-3, atol=0):
        problems.append(f"the graph multiplies the image's channels by {in_graph}, expected {expected['graphScale']}")
    return {**record, "graphScaleInModel": in_graph}


def probabilities_producer(spec) -> str:
    """The type of the layer or op that computes the classifier's probabilities dictionary (casts
    between them skipped): ``softmax`` or ``softmaxND`` where the scores come out of a softmax."""
    if spec.WhichOneof("Type") == "neuralNetworkClassifier":
        network = spec.neuralNetworkClassifier
        name = network.labelProbabilityLayerName
        producer = next((layer for layer in network.layers if name in layer.output), None)
        return producer.WhichOneof("layer") if producer is not None else "none"
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    producers = {output.name: op for op in block.operations for output in op.outputs}
    classify = next((op for op in block.operations if op.type == "classify"), None)
    if classify is None:
        return "none"
    op = producers.get(classify.inputs["probabilities"].arguments[0].name)
    while op is not None and op.type == "cast":
        op = producers.get(op.inputs["x"].arguments[0].name)
    return op.type if op is not None else "none"


def _scores_check(model, spec, problems: list[str]) -> dict | None:
    """What the saved model says its scores are, checked against the op that computes them."""
    record = json.loads(model.user_defined_metadata.get("scores", "null"))
    if record is None:
        return None  # exported before Core ML models said so: their scores are the model's own
    kind, producer = recorded_kind(record), probabilities_producer(spec)
    name = spec.description.predictedProbabilitiesName
    stated = next((o.shortDescription for o in spec.description.output if o.name == name), "")
    if kind is None:
        problems.append(f"the metadata's scores {record} say neither probabilities nor logits")
    elif not stated.startswith(kind):
        problems.append(f"the {name} output's description {stated!r} does not say {kind}")
    if record.get("softmaxAdded") and producer not in SOFTMAX_TYPES:
        problems.append(f"a softmax was to be added, but {name} comes from a {producer}")
    if kind == LOGITS and producer in SOFTMAX_TYPES:
        problems.append(f"the scores are said to be logits, but {name} comes from a {producer}")
    return {**record, "outputDescription": stated, "computedBy": producer}


def weight_precision(spec) -> str:
    """float16 or float32: how the saved model stores its convolution weights."""
    if spec.WhichOneof("Type") == "neuralNetworkClassifier":
        for layer in spec.neuralNetworkClassifier.layers:
            if layer.WhichOneof("layer") == "convolution":
                return "float16" if len(layer.convolution.weights.float16Value) else "float32"
        return "float32"
    from coremltools.proto import MIL_pb2

    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    kinds = {op.outputs[0].type.tensorType.dataType for op in block.operations if op.type == "const"}
    return "float16" if MIL_pb2.DataType.FLOAT16 in kinds else "float32"


def check_spec(source, path: Path, params: dict[str, str]) -> dict:
    """Every property of the saved model that can be checked without running it."""
    import coremltools as ct

    model = ct.models.MLModel(str(path), skip_model_load=True)  # loads back from disk
    spec = model.get_spec()
    problems = []
    expected_type = "mlProgram" if params["model_type"] == "mlprogram" else "neuralNetworkClassifier"
    if spec.WhichOneof("Type") != expected_type:
        problems.append(f"model type {spec.WhichOneof('Type')}, expected {expected_type}")
    inputs = {i.name: i for i in spec.description.input}
    image = inputs.get(INPUT_NAME)
    if image is None or image.type.WhichOneof("Type") != "imageType":
        problems.append(f"no image input named {INPUT_NAME!r}; inputs: {sorted(inputs)}")
    else:
        kind = image.type.imageType
        if (kind.height, kind.width) != (source.height, source.width):
            problems.append(f"input size {kind.height}x{kind.width}, expected {source.height}x{source.width}")
        if kind.colorSpace != ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB:
            problems.append("input color space is not RGB")
    scale, bias = _image_preprocessing(spec)
    want_scale, want_bias = image_scaling(input_plan(source))
    if not np.allclose([scale, *bias], [want_scale, *want_bias], rtol=1e-3, atol=1e-3):
        problems.append(f"input scale/bias {scale}/{bias}, expected {want_scale}/{want_bias}")
    outputs = [o.name for o in spec.description.output]
    label_name, probs_name = spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName
    if label_name != "classLabel" or label_name not in outputs or probs_name not in outputs:
        problems.append(f"outputs {outputs} lack classLabel and a probabilities dictionary")
    labels = json.loads(model.user_defined_metadata.get("labels", "[]"))
    if labels != list(source.labels):
        problems.append("the labels in the model differ from dict.txt")
    if spec.WhichOneof("Type") == "neuralNetworkClassifier":
        class_labels = list(spec.neuralNetworkClassifier.stringClassLabels.vector)
        if class_labels != list(source.labels):
            problems.append("the classifier's class labels differ from dict.txt")
    precision = weight_precision(spec)
    if precision != params["precision"]:
        problems.append(f"weights stored as {precision}, expected {params['precision']}")
    scores = _scores_check(model, spec, problems)
    fold = _fold_check(model, spec, source, problems)
    if problems:
        raise ExportError(Code.FAILED_PRECONDITION, f"verification of {path.name} failed: " + "; ".join(problems))
    return {
        "modelType": spec.WhichOneof("Type"),
        "specificationVersion": spec.specificationVersion,
        "input": {
            "name": INPUT_NAME,
            "height": source.height,
            "width": source.width,
            "colorSpace": "RGB",
            "scale": scale,
            "bias": bias,
            "fold": fold,  # None where the image input applies the whole normalization
        },
        "outputs": outputs,
        "classLabel": label_name,
        "probabilities": probs_name,
        "labels": labels,
        "precision": precision,
        "scores": scores,
        "numericalParity": "not run: Core ML cannot predict on Linux" if platform.system() != "Darwin" else "run",
    }


@register("core_ml")
class CoreMLConverter(Converter):
    libraries = ("tensorflow", "coremltools")

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        model = convert_to_coreml(source, params, plan_for(source, params))
        model.save(str(workdir / artifact_name(params)))
        write_labels(workdir, source.labels)
        return sorted(workdir.iterdir())

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        path = workdir / artifact_name(params)
        spec = check_spec(source, path, params)
        checks = {"spec": CheckReport(spec)}
        if platform.system() == "Darwin":  # Core ML predicts only on Apple platforms
            checks["verification"] = compare(
                "coreml",
                reference,
                _predict(path, source, reference),
                TOLERANCES[params["precision"]],
                what=path.name,
                scores_kind=recorded_kind(spec["scores"]) or reference.kind,
            )
        return checks


def _predict(path: Path, source, reference) -> np.ndarray:
    import coremltools as ct
    from PIL import Image

    model = ct.models.MLModel(str(path))
    spec = model.get_spec()
    probs = spec.description.predictedProbabilitiesName
    rows = []
    for pixels in reference.images.pixels:
        result = model.predict({INPUT_NAME: Image.fromarray(pixels)})
        rows.append([result[probs][label] for label in source.labels])
    return np.asarray(rows, dtype=np.float32)
