"""What a classifier's scores are: probabilities, or logits that a softmax turns into them.

AutoML's exports output probabilities, and the engine's tolerances (near-tie margins, largest
score difference) are stated for them. A model may instead end in logits, whose scale is its own:
an absolute difference of 0.05 means nothing there. So the engine looks at what the model actually
outputs on the held-out images, compares every artifact with it in probability space (the softmax
of each side that is logits), and by the ``output_scores`` param either adds the softmax to the
artifact (``probabilities``, the default) or keeps the model's logits (``logits``).
"""

from __future__ import annotations

import numpy as np

from exporter.core.errors import Code, ExportError

PROBABILITIES = "probabilities"
LOGITS = "logits"
OUTPUT_SCORES = (PROBABILITIES, LOGITS)

# float32 softmax outputs sum to 1 within a few ulps per class; 1e-3 leaves room for float16 models.
SUM_TOLERANCE = 1e-3


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
