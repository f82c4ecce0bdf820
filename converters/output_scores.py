"""What a classifier's scores are: probabilities, or logits that a softmax turns into them.

AutoML's exports output probabilities, and the engine's tolerances (near-tie margins, largest
score difference) are stated for them. A model may instead end in logits, whose scale is its own:
an absolute difference of 0.05 means nothing there. So the engine looks at what the model actually
outputs on the held-out images, compares every artifact with it in probability space (the softmax
of each side that is logits), and by the ``output_scores`` param either adds the softmax to the
artifact (``probabilities``, the default) or keeps the model's logits (``logits``).

Every converter decides and records this the same way (``ScoresPlan``) and builds the graph it
converts from the same function (``scores_function``): the source's serving signature, the
export's input preprocessing before it and the softmax, where one is added, after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from converters.signature import call_model
from exporter.core.errors import Code, ExportError

PROBABILITIES = "probabilities"
LOGITS = "logits"
OUTPUT_SCORES = (PROBABILITIES, LOGITS)

# float32 softmax outputs sum to 1 within a few ulps per class; 1e-3 leaves room for float16 models.
SUM_TOLERANCE = 1e-3
# Held-out images a converter runs the source on to learn what it outputs (one batch).
KIND_SAMPLE = 32


ANY_BATCH_INPUT = "image"  # the input's name in onnx and openvino exports, as the tflite metadata names it


def is_probability_distribution(scores: np.ndarray) -> bool:
    """Whether every row of `scores` [N, C] is non-negative, at most 1 and sums to 1."""
    scores = np.asarray(scores, np.float64)
    in_range = bool(((scores >= -1e-6) & (scores <= 1 + 1e-6)).all())
    return in_range and bool(np.allclose(scores.sum(axis=1), 1.0, atol=SUM_TOLERANCE))


def output_kind(scores: np.ndarray) -> str:
    """``probabilities`` or ``logits``, from what the model output on the held-out images."""
    return PROBABILITIES if is_probability_distribution(scores) else LOGITS


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.asarray(scores, np.float64) - np.max(scores, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def as_probabilities(scores: np.ndarray, kind: str) -> np.ndarray:
    """`scores` in probability space: unchanged when they are probabilities, their softmax when logits."""
    return softmax(scores) if kind == LOGITS else np.asarray(scores, np.float32)


def artifact_kind(source_kind: str, requested: str) -> str:
    """What an artifact's scores are: the model's logits only when it has them and they were asked for."""
    return LOGITS if source_kind == LOGITS and requested == LOGITS else PROBABILITIES


def resolve_scores(params: dict[str, str], source_kind: str) -> str:
    """What the artifact's scores will be, by the ``output_scores`` param (default probabilities).

    Asking for the logits of a model that outputs probabilities is refused: they are not in it.
    """
    requested = params.get("output_scores", PROBABILITIES)
    if requested == LOGITS and source_kind != LOGITS:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "output_scores=logits: this model outputs probabilities (every held-out row is non-negative "
            "and sums to 1), so it has no logits to export; use output_scores=probabilities",
        )
    return artifact_kind(source_kind, requested)


def describe(kind: str, labels: int) -> str:
    """One line for metadata and reports that says what ``scores`` are."""
    if kind == LOGITS:
        return f"logits (unnormalized scores) of the {labels} labels; apply a softmax for probabilities"
    return f"probabilities of the {labels} labels (non-negative, summing to 1)"


def described_kind(text: str) -> str | None:
    """``probabilities`` or ``logits`` from a line `describe` wrote (a ``scores: `` prefix allowed), else None."""
    words = text.strip().removeprefix("scores:").split()
    return words[0] if words and words[0] in OUTPUT_SCORES else None


@dataclass(frozen=True)
class ScoresPlan:
    """What an export's scores are: what the model outputs and what the artifact will output."""

    model_outputs: str  # what the source outputs on the held-out images
    are: str  # what the artifact outputs

    @property
    def softmax_added(self) -> bool:
        return self.model_outputs == LOGITS and self.are == PROBABILITIES

    def record(self, labels: int) -> dict:
        """What artifacts' metadata and reports say of the scores (tflite_metadata.json's ``scores``)."""
        return {
            "are": self.are,
            "modelOutputs": self.model_outputs,
            "softmaxAdded": self.softmax_added,
            "description": describe(self.are, labels),
        }


def plan_scores(params: dict[str, str], source_kind: str) -> ScoresPlan:
    """The plan for a model whose output is `source_kind`, by ``output_scores`` (refusals as resolve_scores)."""
    return ScoresPlan(source_kind, resolve_scores(params, source_kind))


def plan_for(source, params: dict[str, str]) -> ScoresPlan:
    """The plan for `source`, by what it outputs on the first held-out images."""
    from converters.verification import make_reference  # verification imports this module

    return plan_scores(params, make_reference(source, limit=KIND_SAMPLE).kind)


def recorded_kind(record: object) -> str | None:
    """``probabilities`` or ``logits`` from a recorded ``scores`` entry, None when it states neither."""
    kind = record.get("are") if isinstance(record, dict) else None
    return kind if kind in OUTPUT_SCORES else None


def artifact_scores(model_scores, add_softmax: bool):
    """The artifact's scores from the model's output tensor: its softmax where one is added."""
    if not add_softmax:
        return model_scores
    import tensorflow as tf

    return tf.nn.softmax(model_scores)


def scores_function(
    source,
    serving,
    input_shape: list[int | None],
    *,
    add_softmax: bool,
    preprocess: Callable | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
):
    """A tf.function: image [input_shape] -> {output name: the artifact's scores}.

    `serving` is the source's loaded serving signature (converters/signature.py), which the caller
    keeps alive while the function is used; `preprocess` maps the export's input to the model's
    (default: the model's own input, unchanged). Input and output keep the model's names unless
    given others.
    """
    import tensorflow as tf

    spec = tf.TensorSpec(input_shape, tf.float32, name=input_name or source.input_key)

    @tf.function(input_signature=[spec])
    def scores(image):
        model_input = image if preprocess is None else preprocess(image)
        model_scores = call_model(serving, source, model_input)
        return {output_name or source.output_key: artifact_scores(model_scores, add_softmax)}

    return scores


def any_batch_function(source, preprocess: Callable, add_softmax: bool, output_name: str):
    """The export graph of the formats that take any batch (onnx, openvino): input ``image`` float32
    [N, H, W, 3] through `preprocess`, output `output_name`; the serving signature loaded once per
    ``shared_loads()`` scope and kept alive by the function."""
    from converters.signature import load_serving_signature

    serving = load_serving_signature(source.saved_model_dir)
    shape = [None, source.height, source.width, 3]
    function = scores_function(
        source,
        serving,
        shape,
        add_softmax=add_softmax,
        preprocess=preprocess,
        input_name=ANY_BATCH_INPUT,
        output_name=output_name,
    )
    return function, shape
