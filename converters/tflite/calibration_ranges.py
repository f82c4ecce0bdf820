"""Activation ranges chosen per tensor from the calibration activations, not from min/max alone.

TFLite's calibration records each activation tensor's minimum and maximum over the calibration
images, and the quantizer spreads that range over 256 steps. A few outlier activations (one image,
one channel) stretch the range until the step is too coarse for every other value. As TensorRT's
entropy calibrator and the histogram calibrators of other quantization toolkits do, this module
looks at the whole distribution instead: the calibrated model is run again on the calibration
inputs, every ranged tensor's values are binned into a histogram over its recorded range, and a
range is chosen from the histogram by one of two rules:

- ``mse``: the range with the least expected squared error, quantization noise (step² / 12 for
  each value inside) plus clipping (the distance to the range for each value outside), searched
  over every pair of histogram bin edges around zero;
- ``percentile``: the range holding all but ``100 - PERCENTILE`` percent of the values at either
  end. Squared error weighs a far value by its distance squared, so ``mse`` keeps a range wide for
  a handful of far outliers; this rule clips them whatever their distance.

The recorded min/max is a candidate of ``mse``, so a tensor keeps it wherever it is best; the
percentile range is never wider than min/max.
The model's input (raw pixels) and output (TFLite's own output quantization) keep theirs. The chosen
ranges are written into the calibrated model's tensors, which the quantizer then reads as it reads
min/max.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("mse", "percentile")
BINS = 1024
PERCENTILE = 99.99  # the share of values, in percent, the percentile rule keeps at each end
LEVELS = 255  # 8-bit steps across a range


@dataclass
class Histogram:
    """Counts of one tensor's calibration values in ``BINS`` equal bins over [low, high], exact
    zeros apart: zero is always a quantization level, so they quantize without error (half of a
    ReLU's outputs are exactly zero)."""

    low: float
    high: float
    counts: np.ndarray
    zeros: int = 0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, len(self.counts) + 1)

    def add(self, values: np.ndarray) -> None:
        values = values.ravel()
        nonzero = values[values != 0]
        self.zeros += len(values) - len(nonzero)
        width = (self.high - self.low) / len(self.counts)
        index = np.floor((nonzero - self.low) / width).astype(np.int64)
        self.counts += np.bincount(np.clip(index, 0, len(self.counts) - 1), minlength=len(self.counts))


def ranged_tensors(calibrated: bytes) -> dict[int, tuple[float, float]]:
    """Tensor index -> (min, max) recorded by the calibration, for the activations whose range
    may be chosen: not the model's input or output."""
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.convert_bytearray_to_object(calibrated).subgraphs[0]
    ends = set(graph.inputs) | set(graph.outputs)
    ranges = {}
    for index, tensor in enumerate(graph.tensors):
        quantization = tensor.quantization
        if index in ends or quantization is None or quantization.min is None or quantization.max is None:
            continue
        if len(quantization.min) != 1 or len(quantization.max) != 1:
            continue  # per-channel statistics belong to weights, not activations
        low, high = float(quantization.min[0]), float(quantization.max[0])
        if np.isfinite(low) and np.isfinite(high) and high > low:
            ranges[index] = (low, high)
    return ranges


def activation_histograms(calibrated: bytes, inputs: np.ndarray) -> dict[int, Histogram]:
    """Every ranged tensor's histogram over the calibration `inputs` (float, as the model takes them)."""
    from ai_edge_litert.interpreter import Interpreter

    ranges = ranged_tensors(calibrated)
    histograms = {index: Histogram(low, high, np.zeros(BINS, np.int64)) for index, (low, high) in ranges.items()}
    interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True, num_threads=2)
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    for value in inputs:
        interpreter.set_tensor(detail["index"], value[None].astype(detail["dtype"]))
        interpreter.invoke()
        for index, histogram in histograms.items():
            histogram.add(interpreter.get_tensor(index))
    return histograms


def _expected_error(histogram: Histogram, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Expected squared error of quantizing the histogram's values to [low, high] (broadcast), per value.

    Each bin's values stand at its centre. Inside the range a value's rounding error averages
    step² / 12; outside it, the value is clipped to the nearer end. Cumulative sums give every
    candidate's error without walking the bins.
    """
    counts = histogram.counts.astype(np.float64)
    edges = histogram.edges
    centres = (edges[:-1] + edges[1:]) / 2
    total = counts.sum() + histogram.zeros
    n = np.concatenate([[0.0], np.cumsum(counts)])  # n[k]: values in bins below k
    s1 = np.concatenate([[0.0], np.cumsum(counts * centres)])
    s2 = np.concatenate([[0.0], np.cumsum(counts * centres**2)])
    # Bins wholly below a low edge at index i are bins < i; above a high edge at index j, bins >= j.
    low_index = np.searchsorted(edges, lows, side="right") - 1
    high_index = np.searchsorted(edges, highs, side="left")
    low_index, high_index = np.clip(low_index, 0, len(counts)), np.clip(high_index, 0, len(counts))
    below = s2[low_index] - 2 * lows * s1[low_index] + lows**2 * n[low_index]
    above_n, above_s1, above_s2 = n[-1] - n[high_index], s1[-1] - s1[high_index], s2[-1] - s2[high_index]
    above = above_s2 - 2 * highs * above_s1 + highs**2 * above_n
    inside = n[high_index] - n[low_index]
    step = (highs - lows) / LEVELS
    return (inside * step**2 / 12 + below + above) / max(total, 1.0)


def _around_zero(histogram: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """Candidate lows and highs: the bin edges on either side of zero (TFLite's ranges hold zero)."""
    edges = histogram.edges
    lows = edges[edges <= 0.0] if histogram.low < 0 else np.array([0.0])
    highs = edges[edges >= 0.0] if histogram.high > 0 else np.array([0.0])
    return lows, highs


def mse_range(histogram: Histogram) -> tuple[float, float]:
    lows, highs = _around_zero(histogram)
    errors = _expected_error(histogram, lows[:, None], highs[None, :])
    errors[np.isclose(highs[None, :] - lows[:, None], 0.0)] = np.inf
    i, j = np.unravel_index(np.argmin(errors), errors.shape)
    return float(lows[i]), float(highs[j])


def percentile_range(histogram: Histogram) -> tuple[float, float]:
    cumulative = (np.cumsum(histogram.counts) + _zeros_below(histogram)) / max(values_seen(histogram), 1)
    edges = histogram.edges
    tail = 1 - PERCENTILE / 100
    low = edges[np.searchsorted(cumulative, tail, side="left")]
    high = edges[min(np.searchsorted(cumulative, 1 - tail, side="left") + 1, len(edges) - 1)]
    return min(float(low), 0.0), max(float(high), 0.0)


def _zeros_below(histogram: Histogram) -> np.ndarray:
    """The exact zeros counted into the cumulative histogram at the bin holding zero."""
    centres_above = histogram.edges[1:] > 0.0
    return np.where(centres_above, histogram.zeros, 0)


def values_seen(histogram: Histogram) -> int:
    return int(histogram.counts.sum()) + histogram.zeros


def chosen_ranges(histograms: dict[int, Histogram], rule: str) -> dict[int, tuple[float, float]]:
    choose = {"mse": mse_range, "percentile": percentile_range}[rule]
    return {index: choose(histogram) for index, histogram in histograms.items() if histogram.counts.any()}


def with_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """The calibrated model with the given tensors' recorded min/max replaced."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        tensors[index].quantization.min, tensors[index].quantization.max = [low], [high]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
