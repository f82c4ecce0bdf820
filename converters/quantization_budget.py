"""Full-integer quantization within an accuracy budget: remedies tried, in order, before failing.

Plain post-training quantization (``uint8`` / ``int8``) sometimes flips more held-out images than
the budget allows (EfficientNetB0 on the digits: 12 of 360 with 7 allowed). Before the export
fails, these remedies run, in order, each measured against the source on the held-out images:

1. ``calibration``: every calibration image (up to ``MAX_CALIBRATION``) instead of
   ``calibration_count``, so rarely reached activation ranges are seen;
2. ``float_layers``: TFLite's ``QuantizationDebugger`` compares each quantized layer with its
   float twin on the calibration images; the layers with the largest error relative to their
   quantization step (root-mean-square error / scale, as TensorFlow's debugger guide ranks them)
   are kept in float (``denylisted_nodes``), 1, 2, 4, ... up to ``MAX_FLOAT_LAYERS``, while the
   input and output stay integer.

Each try records its flips, size and latency (measured here, one thread), so the report says what
the float layers cost. ``edgetpu_tflite`` runs the calibration remedy only: the Edge TPU runs
integer ops alone.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

REMEDIES = ("all", "calibration", "none")
MAX_CALIBRATION = 1000
MAX_FLOAT_LAYERS = 16
LATENCY_RUNS = 20  # invokes timed per try, after one warm-up


@dataclass(frozen=True)
class Candidate:
    """One quantized model and how it was made."""

    remedy: str  # "plain", "calibration" or "float_layers"
    flatbuffer: bytes
    calibration_images: int
    float_layers: tuple[str, ...] = ()


def latency_ms(flatbuffer: bytes, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one invoke in ai_edge_litert, one thread, on a zero input."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def layers_by_error(converter, dataset: Callable) -> tuple[bytes, list[dict]]:
    """The calibrated model and its quantized layers, largest error first (TFLite's debugger).

    Returns the debugger's calibrated model (to quantize again with layers kept in float) and one
    entry per layer: its output tensor, op and RMSE / scale.
    """
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        error = float(np.sqrt(float(row["mean_squared_error"])) / scale) if scale > 0 else 0.0
        layers.append({"tensor": row["tensor_name"], "op": row["op_name"], "rmse_over_scale": round(error, 4)})
    layers.sort(key=lambda layer: -layer["rmse_over_scale"])
    return debugger.calibrated_model, layers


def quantize_with_float_layers(calibrated: bytes, io_type: str, float_layers: list[str]) -> bytes:
    """Full-integer model from the calibrated one, the named layers kept in float, integer input/output.

    The debugger's own ``get_nondebug_quantized_model`` leaves the input and output in float; the
    same quantizer call (TFLite's ``mlir_quantize``, as the converter makes it) takes their types.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert

    dtype = getattr(tf, io_type)
    return convert.mlir_quantize(
        calibrated,
        fully_quantize=True,
        input_data_type=dtype,
        output_data_type=dtype,
        denylisted_nodes=list(float_layers),
    )


def float_layer_counts(limit: int = MAX_FLOAT_LAYERS) -> list[int]:
    """1, 2, 4, ... up to `limit` (and `limit` itself)."""
    counts, count = [], 1
    while count < limit:
        counts.append(count)
        count *= 2
    return counts + [limit]


def try_entry(candidate: Candidate, measured: dict, plain: dict | None) -> dict:
    """One try as the report records it: how it was made, what it measured, what it cost."""
    entry = {
        "remedy": candidate.remedy,
        "calibration_images": candidate.calibration_images,
        "float_layers": list(candidate.float_layers),
        **measured,
        "bytes": len(candidate.flatbuffer),
        "latency_ms": round(latency_ms(candidate.flatbuffer), 3),
    }
    if plain is not None:
        entry["cost"] = {
            "bytes": entry["bytes"] - plain["bytes"],
            "latency_ms": round(entry["latency_ms"] - plain["latency_ms"], 3),
        }
    return entry
