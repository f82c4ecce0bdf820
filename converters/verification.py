"""Verification of an artifact against its source model, with tolerances stated as counts.

The source SavedModel runs in TensorFlow on the held-out images once (the ``Reference``); each
artifact runs in its own runtime on the same images, fed as its consumers feed it. Both sides are
compared in probability space (converters/output_scores.py: a side whose scores are logits is put
through a softmax), so the tolerances do not depend on the scale of a model's logits. Images where
the source's top two probabilities are closer than the tolerance's margin (near-ties) are left out
of the agreement count, since any rounding may flip them. Every number is collected first, then
the check raises once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from converters.load_scope import shared
from converters.output_scores import as_probabilities, output_kind
from exporter.core.errors import Code, ExportError
from exporter.core.images import UNLABELED, ImageSet, load_image_set, normalize

HELDOUT_LIMIT = 1000  # a few hundred images measure agreement well; more only costs time


@dataclass(frozen=True)
class Tolerance:
    """How far an artifact may be from its source, per quantization mode."""

    max_disagreement_fraction: float  # of decided images whose top-1 differs
    max_abs_diff: float | None  # largest |artifact - source| of any score; None: recorded only
    near_tie_margin: float = 0.01  # source top-2 margin below which an image is undecided

    def allowed_disagreements(self, decided: int) -> int:
        return int(np.floor(self.max_disagreement_fraction * decided + 1e-9))


@dataclass(frozen=True)
class Reference:
    """The held-out images, their model inputs and the source model's scores on them."""

    images: ImageSet
    inputs: np.ndarray  # float32 [N, H, W, 3], normalized as the model expects
    scores: np.ndarray  # float32 [N, C], from the SavedModel in TensorFlow
    kind: str = "probabilities"  # what the source's scores are (output_scores.output_kind)

    @property
    def probabilities(self) -> np.ndarray:
        return as_probabilities(self.scores, self.kind)


class VerificationFailed(ExportError):
    """An artifact outside its tolerance (FAILED_PRECONDITION), with what was measured."""

    def __init__(self, check: Verification, message: str):
        super().__init__(Code.FAILED_PRECONDITION, message)
        self.check = check


@dataclass
class Verification:
    """What one verification measured; becomes ``checks.verification`` in export_report.json."""

    runtime: str
    images: int
    decided: int
    agreeing: int
    allowed_disagreements: int
    max_abs_diff: float
    mean_abs_diff: float
    source_accuracy: float | None
    artifact_accuracy: float | None
    tolerance: dict
    disagreements: list[dict] = field(default_factory=list)
    passed: bool = False  # set by compare(): False only on the check a VerificationFailed carries
    # How it passed: "agreement" (flips within the budget) or why accuracy let it through.
    passed_by: str = "agreement"
    note: str | None = None  # what the reader should know about this check's flips
    # What the scores are on each side, and that they were compared as probabilities.
    scores: dict = field(default_factory=dict)
    # The quantization remedies tried before this check, in order (tflite uint8/int8).
    remedies: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class CheckReport:
    """A report entry that is not a score comparison (a spec check, a compiler summary)."""

    def __init__(self, values: dict):
        self.values = values

    def as_dict(self) -> dict:
        return self.values


def source_scores(source, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """The source SavedModel's class scores on `inputs` (its model inputs), in TensorFlow."""
    import tensorflow as tf

    from converters.signature import call_model, load_serving_signature

    serving = load_serving_signature(source.saved_model_dir)
    outputs = []
    for start in range(0, len(inputs), batch):
        outputs.append(call_model(serving, source, tf.constant(inputs[start : start + batch])).numpy())
    return np.concatenate(outputs).astype(np.float32)


def make_reference(source, limit: int = HELDOUT_LIMIT) -> Reference:
    """The source's scores on its held-out images; computed once per ``shared_loads()`` scope."""

    def build() -> Reference:
        images = load_image_set(
            source.heldout_dir, source.labels, source.height, source.width, limit=limit, purpose="held-out"
        )
        inputs = normalize(images.pixels, source.mean, source.std)
        scores = source_scores(source, inputs)
        for shared_array in (images.pixels, inputs, scores):
            shared_array.flags.writeable = False  # one reference serves every export in a scope
        return Reference(images, inputs, scores, output_kind(scores))

    contract = (
        source.height,
        source.width,
        tuple(np.ravel(source.mean)),
        tuple(np.ravel(source.std)),
        source.input_dtype,
        source.output_key,
    )
    where = (str(Path(source.saved_model_dir).resolve()), str(Path(source.heldout_dir).resolve()))
    return shared(("reference", *where, *contract, tuple(source.labels), limit), build)


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float | None:
    known = labels != UNLABELED
    if not known.any():
        return None
    return float((scores[known].argmax(1) == labels[known]).mean())


def _accurate_enough(result: Verification, flips: int, budget: int) -> bool:
    if result.source_accuracy is None or result.artifact_accuracy is None:
        return False  # no labels: agreement alone decides
    return flips <= 2 * budget and result.artifact_accuracy >= result.source_accuracy


def compare(
    runtime: str,
    reference: Reference,
    scores: np.ndarray,
    tolerance: Tolerance,
    what: str,
    note: str | None = None,
    scores_kind: str | None = None,
    remedies: list[dict] | None = None,
) -> Verification:
    """Compare artifact `scores` with the reference; raise when outside `tolerance`.

    `scores_kind` says what the artifact outputs (default: what the source outputs); both sides
    are compared as probabilities. Top-1 agreement decides, within the tolerance's budget of flips. Where the held-out images
    are labelled, flips beyond the budget (up to twice it) still pass when the artifact is no
    less accurate than the source on the same images: the flips then cost nothing a user sees.
    """
    kind = scores_kind or reference.kind
    source = reference.probabilities
    if scores.shape != source.shape:
        raise ExportError(
            Code.INTERNAL,
            f"{what}: artifact output shape {list(scores.shape)} differs from the source's {list(source.shape)}",
        )
    scores = as_probabilities(scores, kind)
    ranked = np.sort(source, axis=1)
    decided = (ranked[:, -1] - ranked[:, -2]) >= tolerance.near_tie_margin
    differs = source.argmax(1) != scores.argmax(1)
    disagreeing = np.flatnonzero(decided & differs)
    diff = np.abs(scores - source)
    result = Verification(
        runtime=runtime,
        images=len(source),
        decided=int(decided.sum()),
        agreeing=int(decided.sum() - len(disagreeing)),
        allowed_disagreements=tolerance.allowed_disagreements(int(decided.sum())),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        source_accuracy=_accuracy(source, reference.images.labels),
        artifact_accuracy=_accuracy(scores, reference.images.labels),
        tolerance=asdict(tolerance),
        disagreements=[
            {
                "image": reference.images.paths[i].name,
                "source_top1": int(source[i].argmax()),
                "artifact_top1": int(scores[i].argmax()),
            }
            for i in disagreeing[:20]
        ],
    )
    problems = []
    flips, budget = len(disagreeing), result.allowed_disagreements
    if flips > budget:
        if _accurate_enough(result, flips, budget):
            result.passed_by = (
                f"accuracy: {flips} flips exceed the budget of {budget} but stay within twice it, and the "
                f"artifact's accuracy ({result.artifact_accuracy:.2%}) is no lower than the source's "
                f"({result.source_accuracy:.2%}) on the same labelled images"
            )
        else:
            problems.append(
                f"top-1 differs from the source on {flips} of {result.decided} decided images (allowed {budget}"
                + (", or up to twice that with no loss of accuracy" if budget else "")
                + ")"
            )
    if tolerance.max_abs_diff is not None and result.max_abs_diff > tolerance.max_abs_diff:
        problems.append(f"max abs difference {result.max_abs_diff:.3g} exceeds {tolerance.max_abs_diff:.3g}")
    result.note = note
    result.scores = {"source": reference.kind, "artifact": kind, "comparedAs": "probabilities"}
    result.remedies = list(remedies or [])
    result.passed = not problems
    if problems:
        raise VerificationFailed(result, f"verification of {what} failed: " + "; ".join(problems))
    return result
