"""Times a .tflite classifier on the machine it runs on and prints one line of JSON.

Self-contained on purpose: it is copied to remote devices, so it needs only the standard library,
numpy and a TFLite runtime (``ai_edge_litert`` or ``tflite_runtime``). It imports nothing of the
engine.

    python3 tflite_runner.py MODEL DATA_DIR --runtime ai_edge_litert --threads 1 [--no-xnnpack]
        [--delegate LIB] [--min-count 200] [--min-seconds 2] [--warmup 10]

DATA_DIR holds ``pixels.u8`` (the held-out images as uint8 RGB at the input size) and ``meta.json``
(their shape, the label index of each image, the source model's top-1 on each, the source's
normalization). The pixels are fed as a consumer of the file feeds them: ``(pixel - mean) / std``
with the mean and std of the model's metadata (``--mean``, ``--std``; default the source's), then
quantized with the input tensor's own scale and zero point when the input is an integer. Phases are timed
apart as TFLite's benchmark_model does (load and initialization, first inference, warm-up, steady
state); the steady state runs until both a minimum count and a minimum duration are reached, as
MLPerf's SingleStream scenario does. Top-1 accuracy and agreement with the source are computed
here, on this machine's runtime. A missing runtime exits with status 3 and {"missing": ...}.
"""

import argparse
import importlib
import json
import os
import platform
import resource
import sys
import time

MISSING = 3


def _fail_missing(what):
    print(json.dumps({"missing": what}))
    sys.exit(MISSING)


def _load_runtime(name):
    try:
        numpy = importlib.import_module("numpy")
    except ImportError:
        _fail_missing(f"numpy is not installed for {sys.executable} (Python {platform.python_version()})")
    module = {"ai_edge_litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}[name]
    try:
        interpreter = importlib.import_module(module)
    except ImportError as error:
        _fail_missing(f"the TFLite runtime {name} is not installed for {sys.executable}: {error}")
    try:
        version = importlib.import_module("importlib.metadata").version(name.replace("_", "-"))
    except Exception:  # a runtime built from source may carry no distribution metadata
        version = getattr(importlib.import_module(name), "__version__", "unknown")
    return numpy, interpreter, version


def percentile(sorted_ms, fraction):
    """Nearest rank, as MLPerf's LoadGen reports its percentiles."""
    rank = max(0, min(len(sorted_ms) - 1, int(round(fraction * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[rank]


def time_phases(invoke, count, warmup, min_count, min_seconds):
    """First inference, warm-up and steady state of invoke(index), timed apart (milliseconds)."""

    def timed(index):
        began = time.perf_counter()
        invoke(index % count)
        return (time.perf_counter() - began) * 1000

    first_ms = timed(0)
    warm = [timed(i) for i in range(warmup)]
    steady = []
    began = time.perf_counter()
    while len(steady) < min_count or time.perf_counter() - began < min_seconds:
        steady.append(timed(len(steady)))
    seconds = time.perf_counter() - began
    ordered = sorted(steady)
    return {
        "firstInferenceMs": first_ms,
        "warmupMs": sum(warm) / len(warm) if warm else None,
        "warmupRuns": len(warm),
        "steadyRuns": len(steady),
        "steadySeconds": seconds,
        "p50Ms": percentile(ordered, 0.50),
        "p90Ms": percentile(ordered, 0.90),
        "p99Ms": percentile(ordered, 0.99),
        "imagesPerSecond": len(steady) / seconds,
    }


def scores(top1, meta):
    """Top-1 accuracy on the labelled images and agreement with the source's top-1."""
    # Indexed, not zip(strict=...): devices may run a Python older than 3.10.
    labels, source = meta["labels"], meta["source_top1"]
    labelled = [(top1[i], labels[i]) for i in range(len(top1)) if labels[i] >= 0]
    return {
        "images": len(top1),
        "accuracy": sum(t == y for t, y in labelled) / len(labelled) if labelled else None,
        "agreement": sum(top1[i] == source[i] for i in range(len(top1))) / len(top1),
    }


def peak_memory_bytes():
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that across
    execve, so it would report the parent's size when the parent was larger."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: KiB on Linux


def import_runtime(module, what):
    """(numpy, the runtime module); a missing one exits with MISSING and says which."""
    try:
        return importlib.import_module("numpy"), importlib.import_module(module)
    except ImportError as error:
        _fail_missing(f"{what} is not installed for {sys.executable}: {error}")


def held_out(data, np):
    """(meta.json, the held-out uint8 pixels [N, H, W, 3]) of the workload folder `data`."""
    with open(os.path.join(data, "meta.json")) as handle:
        meta = json.load(handle)
    return meta, np.fromfile(os.path.join(data, "pixels.u8"), dtype=np.uint8).reshape(meta["shape"])


def normalized(pixels, mean, std, np):
    """float32 (pixel - mean) / std, as a consumer feeds a float input."""
    return ((pixels.astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)).astype(np.float32)


def add_timing_options(parser):
    """The options every runner takes: threads and how long the steady state runs."""
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-count", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=int, default=10)


def measure(invoke, count, args, meta, np, **facts):
    """Time `invoke(index)` over the `count` images, then top-1 on each: the runner's JSON answer,
    `facts` (runtime, version, ...) first."""
    phases = time_phases(invoke, count, args.warmup, args.min_count, args.min_seconds)
    top1 = [int(np.argmax(invoke(i))) for i in range(count)]
    facts.update(python=platform.python_version(), machine=platform.machine(), threads=args.threads)
    return {**facts, **phases, "peakMemoryBytes": peak_memory_bytes(), **scores(top1, meta)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--runtime", default="ai_edge_litert", choices=("ai_edge_litert", "tflite_runtime"))
    add_timing_options(parser)
    parser.add_argument("--no-xnnpack", action="store_true")
    parser.add_argument("--delegate", default=None)
    parser.add_argument("--mean", default=None, help="comma-separated, from the model's metadata")
    parser.add_argument("--std", default=None, help="comma-separated, from the model's metadata")
    args = parser.parse_args()

    np, tflite, version = _load_runtime(args.runtime)
    with open(os.path.join(args.data, "meta.json")) as handle:
        meta = json.load(handle)
    pixels = np.fromfile(os.path.join(args.data, "pixels.u8"), dtype=np.uint8).reshape(meta["shape"])
    mean = [float(v) for v in args.mean.split(",")] if args.mean else meta["mean"]
    std = [float(v) for v in args.std.split(",")] if args.std else meta["std"]
    inputs = normalized(pixels, mean, std, np)

    options = {"model_path": args.model, "num_threads": args.threads}
    if args.no_xnnpack:  # the plain builtin kernels, without the default XNNPACK delegate
        options["experimental_op_resolver_type"] = tflite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    started = time.perf_counter()
    if args.delegate:
        try:
            options["experimental_delegates"] = [tflite.load_delegate(args.delegate)]
        except (ValueError, OSError) as error:
            _fail_missing(f"the delegate {args.delegate} did not load (no device attached?): {error}")
    interpreter = tflite.Interpreter(**options)
    interpreter.allocate_tensors()
    load_ms = (time.perf_counter() - started) * 1000
    source_in = interpreter.get_input_details()[0]
    source_out = interpreter.get_output_details()[0]

    def feed(image):
        dtype = source_in["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = source_in["quantization"]
            info = np.iinfo(dtype)
            image = np.clip(np.round(image / scale + zero_point), info.min, info.max)
        return image.astype(dtype)[None]

    fed = [feed(image) for image in inputs]  # quantized up front: the timing is the invoke alone

    def invoke(index):
        interpreter.set_tensor(source_in["index"], fed[index])
        interpreter.invoke()
        return interpreter.get_tensor(source_out["index"])[0]

    result = measure(
        invoke,
        len(fed),
        args,
        meta,
        np,
        runtime=args.runtime,
        runtimeVersion=version,
        xnnpack=not args.no_xnnpack,
        loadInitMs=load_ms,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
