"""The quantization modes of the formats whose runtimes quantize on their own (onnx, openvino):
float32, float16 and int8, each with the tolerance its verification holds it to (the tflite
modes' tolerances for the same arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass

from converters import quantization_budget as budget
from converters.verification import Tolerance


@dataclass(frozen=True)
class Mode:
    tolerance: Tolerance
    integer: bool = False  # raw 0..255 pixels in, quantized within the budget


MODES = {
    # The same arithmetic as the source: every decided image agrees, scores within rounding.
    "float32": Mode(Tolerance(0.0, max_abs_diff=1e-4)),
    # float16 weights: rounding of the weights only.
    "float16": Mode(Tolerance(0.01, max_abs_diff=0.05)),
    # int8 weights and activations: the full-integer budget.
    "int8": Mode(Tolerance(0.02, max_abs_diff=None), integer=True),
}


def budget_tolerance(quantization: str, params: dict[str, str]) -> Tolerance:
    """The mode's tolerance, its flip budget replaced by ``max_disagreement`` unless that is ``auto``."""
    return budget.with_budget(MODES[quantization].tolerance, params)
