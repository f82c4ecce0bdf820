"""Activation ranges chosen per tensor from calibration histograms (converters/tflite/calibration_ranges.py):
the expected-error arithmetic against quantizing real samples, outliers that no longer stretch a
range, and the TFLite quantizer taking the chosen ranges."""

import numpy as np
import pytest

from converters.tflite import calibration_ranges as ranges


def histogram_of(values: np.ndarray) -> ranges.Histogram:
    histogram = ranges.Histogram(float(values.min()), float(values.max()), np.zeros(ranges.BINS, np.int64))
    histogram.add(values)
    return histogram


def quantization_error(values: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of 8-bit asymmetric quantization of `values` to [low, high], done."""
    step = (high - low) / ranges.LEVELS
    restored = np.clip(np.round((values - low) / step), 0, ranges.LEVELS) * step + low
    return float(np.mean((values - restored) ** 2))


@pytest.mark.parametrize(
    "distribution",
    ["normal", "relu", "laplace_with_outliers", "uniform"],
)
def test_expected_error_matches_quantizing_the_values(distribution):
    rng = np.random.default_rng(7)
    values = {
        "normal": rng.normal(0.3, 1.0, 200_000),
        "relu": np.maximum(rng.normal(0.0, 2.0, 200_000), 0.0),
        "laplace_with_outliers": np.concatenate([rng.laplace(0.0, 0.5, 200_000), [40.0, -25.0, 31.0]]),
        "uniform": rng.uniform(-3.0, 5.0, 200_000),
    }[distribution]
    histogram = histogram_of(values)
    for low, high in [(histogram.low, histogram.high), ranges.mse_range(histogram), (min(-1.0, 0.0), 2.0)]:
        low, high = min(low, 0.0), max(high, 0.0)
        expected = float(ranges._expected_error(histogram, np.array(low), np.array(high)))
        measured = quantization_error(values, low, high)
        assert expected == pytest.approx(measured, rel=0.15), (low, high)


def test_a_heavy_tail_no_longer_stretches_the_range():
    """Laplace-distributed values (a common activation shape): the least-error range clips the tail
    (near 10 scale units at 8 bits, as the analytic optimum for a Laplace distribution says), and
    its error is well below that of min/max."""
    values = np.random.default_rng(3).laplace(0.0, 1.0, 400_000)
    histogram = histogram_of(values)
    low, high = ranges.mse_range(histogram)
    assert -12.0 < low < -7.0 and 7.0 < high < 12.0, (low, high, histogram.low, histogram.high)
    assert quantization_error(values, low, high) < 0.8 * quantization_error(values, histogram.low, histogram.high)


def test_the_percentile_rule_clips_a_few_far_outliers():
    """Three values 50 standard deviations out: squared error keeps the range wide for them (each costs
    thousands of times a rounding error when clipped); the percentile rule clips them."""
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0.0, 1.0, 300_000), [60.0, 55.0, -48.0]])
    histogram = histogram_of(values)
    low, high = ranges.percentile_range(histogram)
    assert -6.0 < low < -3.0 and 3.0 < high < 6.0
    mse_low, mse_high = ranges.mse_range(histogram)
    assert mse_low < -15.0 and mse_high > 15.0


def test_min_max_stays_where_nothing_is_gained():
    """Values spread evenly to both ends: clipping more than a sliver only adds error, so the range
    stays min/max to within 1% of its width."""
    values = np.random.default_rng(5).uniform(-2.0, 6.0, 300_000)
    histogram = histogram_of(values)
    width = histogram.high - histogram.low
    low, high = ranges.mse_range(histogram)
    assert abs(low - histogram.low) <= 0.01 * width and abs(high - histogram.high) <= 0.01 * width


def test_exact_zeros_count_in_the_percentiles():
    """A ReLU's output: 70% exact zeros; the 99.99th percentile is taken over every value."""
    rng = np.random.default_rng(9)
    values = np.concatenate([np.zeros(700_000), rng.uniform(0.0, 10.0, 300_000)])
    histogram = histogram_of(values)
    assert ranges.values_seen(histogram) == len(values)
    low, high = ranges.percentile_range(histogram)
    assert low == 0.0 and high == pytest.approx(np.percentile(values, ranges.PERCENTILE), abs=0.05)


def test_the_quantizer_takes_the_chosen_ranges(digits_model):
    """The real calibrated digits model: every ranged tensor's histogram holds every value of every
    calibration image, and a narrowed range comes out of TFLite's quantizer as that tensor's scale."""
    from ai_edge_litert.interpreter import Interpreter

    from converters.input_plan import input_plan
    from converters.tflite import converter as tflite
    from converters.tflite.converter import calibrated_model, quantize_fully
    from exporter.core.model_source import read_model

    source = read_model(digits_model)
    plan = input_plan(source, integer=True)
    pixels = tflite.calibration_pixels(source, 20)
    calibrated = calibrated_model(source, plan, False, pixels)
    histograms = ranges.activation_histograms(calibrated, plan.feed(pixels))
    assert len(histograms) > 50  # MobileNetV2: every activation between the input and the output
    interpreter = Interpreter(model_content=calibrated)
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    for index, histogram in histograms.items():
        assert ranges.values_seen(histogram) == np.prod(shapes[index]) * len(pixels)
    chosen = ranges.chosen_ranges(histograms, "mse")
    assert narrowed(histograms, chosen) > 0
    index, (low, high) = max(
        ((i, r) for i, r in chosen.items()), key=lambda item: histograms[item[0]].high - item[1][1]
    )
    assert high < histograms[index].high
    quantized = Interpreter(model_content=quantize_fully(ranges.with_ranges(calibrated, chosen), "uint8"))
    name = next(t["name"] for t in interpreter.get_tensor_details() if t["index"] == index)
    (scale, _), *_ = [t["quantization"] for t in quantized.get_tensor_details() if t["name"] == name]
    assert scale == pytest.approx((high - low) / ranges.LEVELS, rel=0.02)


def narrowed(histograms: dict[int, ranges.Histogram], chosen: dict[int, tuple[float, float]]) -> int:
    """How many tensors the chosen ranges narrow (the rest keep min/max)."""
    return sum(
        1
        for index, (low, high) in chosen.items()
        if (low, high) != (histograms[index].low, histograms[index].high)
        and not np.isclose(high - low, histograms[index].high - histograms[index].low)
    )
