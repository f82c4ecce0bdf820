"""How a check decides: flips within the budget pass; beyond it, labelled images may still pass
it on accuracy (up to twice the budget, never less accurate than the source)."""

from pathlib import Path

import numpy as np
import pytest

from converters.verification import Reference, Tolerance, VerificationFailed, compare
from exporter.core.images import UNLABELED, ImageSet

IMAGES = 100
BUDGET = Tolerance(0.02, max_abs_diff=None)  # 2 flips allowed on 100 decided images


def reference(labels: np.ndarray) -> Reference:
    """Source scores: class i % 4 wins clearly on image i; the truth is `labels`."""
    scores = np.full((IMAGES, 4), 0.1, np.float32)
    scores[np.arange(IMAGES), np.arange(IMAGES) % 4] = 0.7
    images = ImageSet(tuple(Path(f"{i}.png") for i in range(IMAGES)), np.zeros((IMAGES, 2, 2, 3), np.uint8), labels)
    return Reference(images, np.zeros((IMAGES, 2, 2, 3), np.float32), scores)


def flipped(ref: Reference, indices: list[int], to: list[int]) -> np.ndarray:
    scores = ref.scores.copy()
    for i, label in zip(indices, to, strict=True):
        scores[i] = 0.1
        scores[i, label] = 0.7
    return scores


def truth_with_source_wrong_on(indices: list[int]) -> np.ndarray:
    labels = np.arange(IMAGES) % 4
    labels[indices] = (labels[indices] + 1) % 4
    return labels


def test_flips_within_the_budget_pass_on_agreement():
    ref = reference(np.arange(IMAGES) % 4)
    check = compare("test", ref, flipped(ref, [0, 1], [1, 2]), BUDGET, what="artifact")
    assert check.passed and check.passed_by == "agreement"


def test_more_flips_pass_when_the_artifact_is_no_less_accurate():
    # The source is wrong on images 0..3; the artifact's four flips correct exactly those.
    ref = reference(truth_with_source_wrong_on([0, 1, 2, 3]))
    check = compare("test", ref, flipped(ref, [0, 1, 2, 3], [1, 2, 3, 0]), BUDGET, what="artifact")
    assert check.passed and check.passed_by.startswith("accuracy: 4 flips exceed the budget of 2")
    assert check.artifact_accuracy > check.source_accuracy


def test_more_flips_that_cost_accuracy_fail():
    ref = reference(np.arange(IMAGES) % 4)
    with pytest.raises(VerificationFailed) as raised:
        compare("test", ref, flipped(ref, [0, 1, 2], [1, 2, 3]), BUDGET, what="artifact")
    assert not raised.value.check.passed
    assert "differs from the source on 3 of 100 decided images (allowed 2, or up to twice" in raised.value.message


def test_beyond_twice_the_budget_fails_whatever_the_accuracy():
    wrong = [0, 1, 2, 3, 4]
    ref = reference(truth_with_source_wrong_on(wrong))
    with pytest.raises(VerificationFailed):
        compare("test", ref, flipped(ref, wrong, [(i + 1) % 4 for i in wrong]), BUDGET, what="artifact")


def test_without_labels_agreement_alone_decides():
    wrong = [0, 1, 2]
    ref = reference(np.full(IMAGES, UNLABELED))
    with pytest.raises(VerificationFailed):
        compare("test", ref, flipped(ref, wrong, [(i + 1) % 4 for i in wrong]), BUDGET, what="artifact")


def test_an_exact_tolerance_never_passes_on_accuracy():
    ref = reference(truth_with_source_wrong_on([0]))
    with pytest.raises(VerificationFailed):
        compare("test", ref, flipped(ref, [0], [1]), Tolerance(0.0, max_abs_diff=None), what="artifact")
