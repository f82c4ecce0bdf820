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

from exporter.core.errors import Code, ExportError

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
    # The layers at either end stay quantized: in float they would leave the model's input or output float.
    ends = _end_layers(debugger.calibrated_model)
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        if row["tensor_name"] in ends:
            continue
        scale = float(row["scale"])
        error = float(np.sqrt(float(row["mean_squared_error"])) / scale) if scale > 0 else 0.0
        layers.append({"tensor": row["tensor_name"], "op": row["op_name"], "rmse_over_scale": round(error, 4)})
    layers.sort(key=lambda layer: -layer["rmse_over_scale"])
    return debugger.calibrated_model, layers


def _end_layers(model: bytes) -> set[str]:
    """Output tensor names of the ops that read the model's input, and of the model's output."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=model)
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    ends = {d["name"] for d in interpreter.get_output_details()}
    for op in interpreter._get_ops_details():  # the graph's edges; no public API lists them
        if inputs & set(op["inputs"]):
            ends.update(tensors[i] for i in op["outputs"] if i in tensors)
    return ends


def quantize_with_float_layers(calibrated: bytes, io_type: str, float_layers: list[str]) -> bytes:
    """Full-integer model from the calibrated one, the named layers kept in float, integer input/output.

    The debugger's own ``get_nondebug_quantized_model`` leaves the input and output in float; as
    the converter itself does, the same quantizer call (``mlir_quantize``) is followed by
    ``modify_model_io_type``, which replaces the float input and output with integer ones.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert, util

    quantized = convert.mlir_quantize(calibrated, denylisted_nodes=list(float_layers))  # float input and output
    dtype = getattr(tf, io_type)
    model = util.modify_model_io_type(quantized, inference_input_type=dtype, inference_output_type=dtype)
    interpreter = tf.lite.Interpreter(model_content=model)
    ends = interpreter.get_input_details() + interpreter.get_output_details()
    if any(detail["dtype"] != dtype.as_numpy_dtype for detail in ends):
        raise ExportError(
            Code.INTERNAL, f"keeping {len(float_layers)} layers in float left a non-{io_type} input or output"
        )
    return model


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
