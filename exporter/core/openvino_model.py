"""Running an ``openvino`` export (``model.xml`` + ``model.bin``) as its consumers do: the OpenVINO
runtime on the CPU, its input fed from 0..255 pixels with the normalization its own ``rt_info``
names. Here in the core, beside the tflite and onnx runners, so ``exporter predict`` loads no
converter to run one.

The metadata lives under the IR's ``rt_info`` section ``exporter``: ``labels`` (a JSON list:
OpenVINO reads a list value back as one space-joined string, which would split labels with
spaces), ``image_mean`` / ``image_std`` (JSON lists per channel: the input is
``(pixel - mean) / std``), ``scores`` (``probabilities`` or ``logits``), ``quantization``,
``inference_precision`` and ``engine``.

OpenVINO's CPU plugin computes in bfloat16 by default where the CPU has bfloat16 instructions
(AMX, AVX512_BF16), whatever the IR's precision; ``precision`` ``f32`` asks for float32, as the
export's verification does (``inference_precision`` in the metadata).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from exporter.core.images import normalize

SECTION = "exporter"
BATCH = 32
LATENCY_RUNS = 20
F32 = "f32"


def read_model(model: str | Path):
    import openvino

    return openvino.Core().read_model(str(model))


def compile_model(model, precision: str | None = F32, threads: int | None = None):
    """A compiled CPU model; `precision` None keeps the plugin's default (bfloat16 where the CPU has it)."""
    import openvino

    config: dict = {}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    source = read_model(model) if isinstance(model, (str, Path)) else model
    return openvino.Core().compile_model(source, "CPU", config)


def default_precision() -> str:
    """The CPU plugin's own inference precision on this machine (``bf16`` or ``f32``)."""
    import openvino

    return str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


def read_metadata(model) -> dict:
    """The ``exporter`` section of the model's rt_info, JSON values decoded."""
    source = read_model(model) if isinstance(model, (str, Path)) else model
    found: dict = {}
    if not source.has_rt_info([SECTION]):
        return found
    for key in ("labels", "image_mean", "image_std", "scores", "quantization", "inference_precision", "engine"):
        if source.has_rt_info([SECTION, key]):
            value = source.get_rt_info([SECTION, key]).astype(str)
            found[key] = json.loads(value) if key in ("labels", "image_mean", "image_std") else value
    return found


def scores(compiled, pixels: np.ndarray, mean, std) -> np.ndarray:
    """Float scores [N, C] of a compiled model on 0..255 `pixels`, in batches."""
    output = compiled.output(0)
    out = [compiled(normalize(pixels[i : i + BATCH], mean, std))[output] for i in range(0, len(pixels), BATCH)]
    return np.concatenate(out).astype(np.float32)


def latency_ms(compiled, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of one single-image inference of a compiled model on a zero input."""
    shape = [1 if dim.is_dynamic else dim.get_length() for dim in compiled.input(0).get_partial_shape()]
    request = compiled.create_infer_request()
    image = np.zeros(shape, np.float32)
    request.infer([image])
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        request.infer([image])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))
