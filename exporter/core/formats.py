"""The one table of export formats.

Every ``modelFormat`` is a row: what it writes, which destination it takes, the params it
accepts (defaults and allowed values) and what it builds on. The request contract, the CLI's
help, ``exporter formats`` and the README's and docs/formats.md's tables are all derived from these rows; nothing
else lists formats or params.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.core.model_types import MOBILE_MODEL_TYPES
from exporter.core.platforms import cpu_architectures, gpu_architectures, platform_combinations

DEFAULT_FORMAT = "tflite"


class DestinationKind(str, enum.Enum):
    """The member of the request's destination union that a format takes."""

    GCS = "gcsDestination"  # a folder prefix: gs://bucket/dir, file:///dir or a plain path
    GCR = "gcrDestination"  # a container image URI: HOST/PROJECT/IMAGE[:TAG]


def integer_between(low: int, high: int) -> Callable[[str], str | None]:
    """A check for a free-form param that must be a decimal integer in [low, high]."""

    def check(value: str) -> str | None:
        if not value.isdigit() or not low <= int(value) <= high:
            return f"must be an integer from {low} to {high}"
        return None

    check.allowed_text = f"an integer from {low} to {high}"  # type: ignore[attr-defined]
    return check


@dataclass(frozen=True)
class Param:
    """One key of ``outputConfig.params`` for one format."""

    name: str
    default: str
    description: str
    allowed: tuple[str, ...] = ()  # the closed set of values; empty when `check` decides
    check: Callable[[str], str | None] | None = None

    def problem(self, value: str) -> str | None:
        """Why `value` is not accepted, or None when it is."""
        if self.allowed and value not in self.allowed:
            return f"{value!r} is not allowed; allowed values: {', '.join(self.allowed)}"
        if self.check is not None:
            return self.check(value)
        return None

    @property
    def allowed_text(self) -> str:
        if self.allowed:
            return ", ".join(self.allowed)
        return getattr(self.check, "allowed_text", "any string")


@dataclass(frozen=True)
class FormatRow:
    """One ``modelFormat``: everything the contract, the CLI and the docs need to know of it."""

    name: str
    description: str
    artifacts: tuple[str, ...]
    destination: DestinationKind
    params: tuple[Param, ...] = ()
    builds_on: str | None = None
    # Checks params together once each is valid on its own; returns problems as (key, text).
    validate: Callable[[dict[str, str]], list[tuple[str, str]]] | None = None
    exportable_model_types: tuple[str, ...] = field(default=MOBILE_MODEL_TYPES)
    # Not one of the AutoML API's six modelFormat values: this engine's own extension.
    extension: bool = False

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def with_defaults(self, params: dict[str, str]) -> dict[str, str]:
        """The params as given, with every key the format takes filled from its default."""
        return {p.name: params.get(p.name, p.default) for p in self.params}


def core_ml_combinations(params: dict[str, str]) -> list[tuple[str, str]]:
    """What coremltools refuses: a neural network for iOS 15+, an ML program before iOS 15."""
    target = params["minimum_deployment_target"]
    if target == "auto":
        return []
    version = int(target.removeprefix("iOS"))
    if params["model_type"] == "neuralnetwork" and version >= 15:
        return [
            (
                "minimum_deployment_target",
                f"{target} needs model_type mlprogram: coremltools writes neuralnetwork models for iOS13 and iOS14 only",
            )
        ]
    if params["model_type"] == "mlprogram" and version < 15:
        return [
            (
                "minimum_deployment_target",
                f"{target} cannot run an mlprogram: use iOS15 or later, or model_type neuralnetwork",
            )
        ]
    return []


CALIBRATION_COUNT = Param(
    "calibration_count",
    "100",
    "How many calibration images feed the quantizer's representative dataset (fewer when the model has fewer).",
    check=integer_between(1, 10000),
)


def fraction_or_auto(value: str) -> str | None:
    """A check for a budget: ``auto``, or a decimal fraction from 0 to 1."""
    if value == "auto":
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not value[:1].isdigit() or not 0.0 <= number <= 1.0:
        return "must be auto or a decimal fraction from 0 to 1 (e.g. 0.02)"
    return None


fraction_or_auto.allowed_text = "auto, or a fraction from 0 to 1"  # type: ignore[attr-defined]

MAX_DISAGREEMENT = Param(
    "max_disagreement",
    "auto",
    "Budget of held-out images whose top-1 may differ from the source's, as a fraction of the decided "
    "images; auto: the quantization's own (0 for float32, 0.01 for float16, 0.02 otherwise).",
    check=fraction_or_auto,
)

QUANTIZATION_REMEDIES = Param(
    "quantization_remedies",
    "all",
    "What uint8/int8 may try when plain quantization misses the budget, each try starting from the "
    "best so far: all: more calibration images, activation ranges chosen per tensor from the "
    "calibration histograms, the classifier head kept in float, then the layers with the largest "
    "quantization error (integer input and output stay); integer: the first two, every op "
    "staying integer; calibration: the first only; none: fail at once.",
    allowed=("all", "integer", "calibration", "none"),
)


def output_scores_param(where: str) -> Param:
    return Param(
        "output_scores",
        "probabilities",
        f"What {where} outputs for a model whose output is logits: probabilities (a softmax added, as "
        "AutoML's exports) or its logits. A model that outputs probabilities keeps them.",
        allowed=("probabilities", "logits"),
    )


TFLITE_QUANTIZATION = Param(
    "quantization",
    "uint8",
    "uint8: full-integer, uint8 input and output (AutoML's QUANTIZED_UINT8); int8: full-integer, "
    "int8 input and output; float16: float16 weights; dynamic_range: int8 weights, float input "
    "and output; float32: no quantization.",
    allowed=("uint8", "int8", "float16", "dynamic_range", "float32"),
)

FORMATS: tuple[FormatRow, ...] = (
    FormatRow(
        name="tflite",
        description="TensorFlow Lite flatbuffer for mobile and embedded runtimes",
        artifacts=("model.tflite", "dict.txt", "tflite_metadata.json"),
        destination=DestinationKind.GCS,
        params=(
            TFLITE_QUANTIZATION,
            CALIBRATION_COUNT,
            MAX_DISAGREEMENT,
            QUANTIZATION_REMEDIES,
            output_scores_param("model.tflite"),
        ),
    ),
    FormatRow(
        name="edgetpu_tflite",
        description="full-integer TFLite compiled for the Coral Edge TPU",
        artifacts=(
            "edgetpu_model.tflite",
            "model.tflite",
            "dict.txt",
            "tflite_metadata.json",
            "edgetpu_compatibility.json",
            "edgetpu_compiler.log",
        ),
        destination=DestinationKind.GCS,
        params=(
            Param(
                "min_runtime_version",
                "13",
                "The oldest Edge TPU runtime the model must run on (edgetpu_compiler -m).",
                allowed=("10", "11", "12", "13", "14"),
            ),
            Param(
                "num_segments",
                "1",
                "Split the model into this many segments for pipelining on several Edge TPUs (-n).",
                check=integer_between(1, 16),
            ),
            CALIBRATION_COUNT,
        ),
        builds_on="tflite",
    ),
    FormatRow(
        name="tf_saved_model",
        description="serving SavedModel: image_bytes + key in, scores/labels/key out",
        artifacts=("saved_model.pb", "variables/"),
        destination=DestinationKind.GCS,
        params=(output_scores_param("the serving signature's scores"),),
    ),
    FormatRow(
        name="tf_js",
        description="TensorFlow.js graph model",
        artifacts=("model.json", "group1-shard*of*.bin", "dict.txt"),
        destination=DestinationKind.GCS,
        params=(
            Param(
                "quantization",
                "float32",
                "Weight storage: float32, float16, or uint8 (affine, dequantized on load).",
                allowed=("float32", "float16", "uint8"),
            ),
            Param(
                "shard_size_bytes",
                "4194304",
                "Largest weight shard file, in bytes.",
                check=integer_between(1024, 1 << 30),
            ),
            Param(
                "input_contract",
                "native",
                "native: the model's own input; automl: AutoML's tf_js contract (a 224x224 image "
                "scaled to [-1, 1], as @tensorflow/tfjs-automl feeds it), adapted to the model "
                "inside the graph.",
                allowed=("native", "automl"),
            ),
            output_scores_param("model.json"),
        ),
    ),
    FormatRow(
        name="core_ml",
        description="Core ML classifier with an image input",
        artifacts=("model.mlmodel or model.mlpackage", "dict.txt"),
        destination=DestinationKind.GCS,
        params=(
            Param(
                "model_type",
                "neuralnetwork",
                "neuralnetwork: model.mlmodel (iOS 13/14); mlprogram: model.mlpackage (iOS 15+).",
                allowed=("neuralnetwork", "mlprogram"),
            ),
            Param(
                "precision",
                "float32",
                "Weight precision: float32, or float16 (half the size).",
                allowed=("float32", "float16"),
            ),
            Param(
                "minimum_deployment_target",
                "auto",
                "auto: iOS13 for neuralnetwork, iOS15 for mlprogram; or an iOS version.",
                allowed=("auto", "iOS13", "iOS14", "iOS15", "iOS16", "iOS17", "iOS18"),
            ),
            output_scores_param("the classifier's probabilities dictionary"),
        ),
        validate=core_ml_combinations,
    ),
    FormatRow(
        name="docker",
        description="TF Serving container image with the model baked in, pushed to a registry",
        artifacts=("an image at gcrDestination.outputUri",),
        destination=DestinationKind.GCR,
        params=(
            Param("cpu_architecture", "x86_64", "CPU architecture of the image.", cpu_architectures()),
            Param(
                "gpu_architecture",
                "none",
                "none: CPU serving image; nvidia: the TF Serving GPU image.",
                gpu_architectures(),
            ),
            Param(
                "builder",
                "auto",
                "engine: build and push through a Docker engine; daemonless: append the model layer "
                "over the registry's HTTP API; auto: the engine when one is reachable.",
                ("auto", "engine", "daemonless"),
            ),
        ),
        builds_on="tf_saved_model",
        validate=platform_combinations,
    ),
    FormatRow(
        name="onnx",
        description="ONNX model for onnxruntime and other ONNX runtimes (an extension beyond AutoML)",
        artifacts=("model.onnx", "dict.txt", "onnx_metadata.json"),
        destination=DestinationKind.GCS,
        params=(
            Param(
                "quantization",
                "float32",
                "float32: no quantization; float16: float16 weights and arithmetic, float32 input "
                "and output; int8: int8 weights and activations (QDQ), raw 0..255 pixels in.",
                allowed=("float32", "float16", "int8"),
            ),
            Param(
                "opset",
                "18",
                "The ONNX opset: 18 is the newest tf2onnx writes; 13 the oldest whose "
                "QuantizeLinear takes per-channel int8 weights.",
                allowed=("13", "14", "15", "16", "17", "18"),
            ),
            CALIBRATION_COUNT,
            MAX_DISAGREEMENT,
            QUANTIZATION_REMEDIES,
            output_scores_param("model.onnx"),
        ),
        extension=True,
    ),
    FormatRow(
        name="openvino",
        description="OpenVINO IR for Intel CPUs, GPUs and NPUs (an extension beyond AutoML)",
        artifacts=("model.xml", "model.bin", "dict.txt", "openvino_metadata.json"),
        destination=DestinationKind.GCS,
        params=(
            Param(
                "quantization",
                "float32",
                "float32: no quantization; float16: weights stored as float16; int8: NNCF "
                "post-training quantization, raw 0..255 pixels in.",
                allowed=("float32", "float16", "int8"),
            ),
            CALIBRATION_COUNT,
            MAX_DISAGREEMENT,
            QUANTIZATION_REMEDIES,
            output_scores_param("model.xml"),
        ),
        extension=True,
    ),
)

AUTOML_FORMAT_NAMES = tuple(row.name for row in FORMATS if not row.extension)

FORMAT_NAMES = tuple(row.name for row in FORMATS)


def format_row(name: str) -> FormatRow:
    """The row named `name`; KeyError when there is none (callers validate names first)."""
    for row in FORMATS:
        if row.name == name:
            return row
    raise KeyError(name)


def describe_formats() -> list[dict]:
    """The table as JSON, for ``exporter formats --json`` and the docs."""
    return [
        {
            "modelFormat": row.name,
            "description": row.description,
            "destination": row.destination.value,
            "artifacts": list(row.artifacts),
            "buildsOn": row.builds_on,
            "extension": row.extension,
            "params": [
                {"name": p.name, "default": p.default, "allowed": p.allowed_text, "description": p.description}
                for p in row.params
            ],
        }
        for row in FORMATS
    ]


def formats_markdown() -> str:
    """The table in Markdown, as the README and docs/formats.md carry it (a test keeps them equal)."""
    lines = [
        "| modelFormat | destination | artifacts | params: default (allowed) |",
        "| --- | --- | --- | --- |",
    ]
    for entry in describe_formats():
        params = "<br>".join(f"`{p['name']}`: `{p['default']}` ({p['allowed']})" for p in entry["params"]) or "none"
        artifacts = ", ".join(f"`{a}`" for a in entry["artifacts"])
        name = f"`{entry['modelFormat']}`" + (" (extension)" if entry["extension"] else "")
        lines.append(f"| {name} | `{entry['destination']}` | {artifacts} | {params} |")
    return "\n".join(lines)
