"""Running a ``model.onnx`` export as its consumers do: onnxruntime on the CPU, its input fed from
0..255 pixels with the normalization its own metadata names. Here in the core, beside the tflite
runner, so ``exporter predict`` loads no converter to run one.

The metadata lives in the model's ``metadata_props`` (ONNX's key/value strings): ``labels`` (a
JSON list), ``image_mean`` / ``image_std`` (JSON lists, one value per channel, the input is
``(pixel - mean) / std``), ``scores`` (``probabilities`` or ``logits``) and ``engine``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from exporter.core.images import normalize

BATCH = 32  # images per run when scoring a set: the input's batch is dynamic
LATENCY_RUNS = 20


def session(model: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session of `model` (a path or the serialized bytes)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: a warning per unused initializer is noise
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def read_metadata(model: str | Path | bytes) -> dict:
    """The model's ``metadata_props`` decoded: labels, mean, std, scores, and the rest as text."""
    import onnx

    proto = (
        onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model), load_external_data=False)
    )
    props = {entry.key: entry.value for entry in proto.metadata_props}
    decoded: dict = dict(props)
    for key in ("labels", "image_mean", "image_std", "input"):
        if key in props:
            decoded[key] = json.loads(props[key])
    return decoded


def scores(run, pixels: np.ndarray, mean, std) -> np.ndarray:
    """Float scores [N, C] of the session `run` on 0..255 `pixels`, in batches."""
    name = run.get_inputs()[0].name
    out = [run.run(None, {name: normalize(pixels[i : i + BATCH], mean, std)})[0] for i in range(0, len(pixels), BATCH)]
    return np.concatenate(out).astype(np.float32)


def latency_ms(model: bytes, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one single-image run in onnxruntime, one thread, on a zero input."""
    run = session(model, threads=1)
    detail = run.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in detail.shape]
    feed = {detail.name: np.zeros(shape, np.float32)}
    run.run(None, feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run.run(None, feed)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))
