"""Benchmark: every format this machine builds from one model, the engine against the stock tools.

    .venv/bin/python benchmarks/export_speed.py [--model DIR]

The engine exports tflite (all five modes), tf_saved_model, tf_js, core_ml, onnx and openvino in one process
(one TensorFlow import, through ``exporter.run.export_model``, each export verified). The stock
tools run one after another as a user would: the TFLiteConverter script per mode
(stock_tflite_convert.py), ``tensorflowjs_converter``, the coremltools script
(stock_coreml_convert.py), a hand-written serving SavedModel re-export
(stock_savedmodel_export.py), tf2onnx's conversion as its command line makes it
(stock_onnx_convert.py) and OpenVINO's as ``ovc`` makes it (stock_openvino_convert.py), each a
whole command. Prints the ratio of the totals, the engine's
time without its verification (its verification-free minimum), its time split by stage, each
format's conversion stage against the stock tool's, and the engine process's peak memory; states
which goals are met and, where missed, by how much. edgetpu_tflite (no Edge TPU compiler here)
and docker (no Docker engine or TF Serving base image here) are not built on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import BIN, QUIET, REPO, sample_model, save, timed

ENGINE_EXPORTS = (
    *(("tflite", {"quantization": mode}) for mode in ("float32", "float16", "dynamic_range", "uint8", "int8")),
    ("tf_saved_model", {}),
    ("tf_js", {"quantization": "float32"}),
    ("core_ml", {"model_type": "neuralnetwork", "precision": "float32"}),
    ("onnx", {"quantization": "float32"}),
    ("openvino", {"quantization": "float32"}),
)
GIB = 1 << 30
# What the engine's convert stage does beyond the stock tool's conversion, by format.
BEYOND_STOCK = {
    "tflite": "traces the serving signature at batch 1 and saves it as the SavedModel every later tflite "
    "mode of the run converts from (the first mode of each input kind pays it), runs the source on 32 "
    "held-out images to tell probabilities from logits, and embeds the TFLite metadata (labels, "
    "normalization) into the flatbuffer",
    "core_ml": "sets the deployment target, renames the input and rebuilds the model from its spec, and "
    "writes author, description, version and labels into the metadata",
    "tf_saved_model": "builds the serving graph with key and labels outputs and AutoML's input contract",
    "onnx": "traces the serving signature with a dynamic batch and named input and output, writes labels "
    "and normalization into metadata_props, and runs onnx.checker's full check",
    "openvino": "traces the serving signature with a dynamic batch and saves it as a SavedModel before "
    "OpenVINO reads it, names the input and output, and writes labels and normalization into rt_info",
}


def label(model_format: str, params: dict) -> str:
    return f"{model_format} {' '.join(f'{k}={v}' for k, v in params.items())}".strip()


def engine_child(model: str, out: str) -> None:
    """In a fresh process: every export in turn; prints the stage seconds and peak memory."""
    # oneDNN stays on, as with the stock tools: the tf_js export converts in a fresh process
    # without oneDNN's rewrites (converters/tf_js/graph.py), its cost counted in its convert stage.
    from converters.load_scope import shared_loads
    from exporter.run import export_model

    exports = []
    with shared_loads():  # one load of the model (and one reference run) for every export
        for model_format, params in ENGINE_EXPORTS:
            config = {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": out}, "params": params}
            result = export_model(model, config)
            exports.append({"format": label(model_format, params), "seconds": result.seconds})
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"exports": exports, "peakMemoryBytes": peak}))


def engine_run(model: Path, out: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--engine-child", str(model), str(out)], capture_output=True, text=True, env=QUIET
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark: the engine's exports failed:\n{result.stderr[-3000:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    answer["wall"] = time.perf_counter() - started
    return answer


def stock_runs(model: Path, work: Path) -> dict[str, dict]:
    """Each stock tool as a whole command: wall seconds and, where it says, conversion seconds."""
    from exporter.core.model_source import read_model

    source = read_model(model)
    size = str(source.height)
    script = REPO / "benchmarks"
    commands = {
        label("tflite", {"quantization": mode}): [
            sys.executable,
            str(script / "stock_tflite_convert.py"),
            str(source.saved_model_dir),
            mode,
            str(source.calibration_dir),
            size,
            str(work / f"{mode}.tflite"),
        ]
        for mode in ("float32", "float16", "dynamic_range", "uint8", "int8")
    }
    commands[label("tf_saved_model", {})] = [
        sys.executable,
        str(script / "stock_savedmodel_export.py"),
        str(source.saved_model_dir),
        size,
        str(work / "serving"),
    ]
    commands[label("tf_js", {"quantization": "float32"})] = [
        str(BIN / "tensorflowjs_converter"),
        "--input_format=tf_saved_model",
        "--signature_name=serving_default",
        "--saved_model_tags=serve",
        str(source.saved_model_dir),
        str(work / "tfjs"),
    ]
    commands[label("core_ml", {"model_type": "neuralnetwork", "precision": "float32"})] = [
        sys.executable,
        str(script / "stock_coreml_convert.py"),
        str(source.saved_model_dir),
        str(source.root / "dict.txt"),
        size,
        "neuralnetwork",
        str(work / "model.mlmodel"),
    ]
    commands[label("onnx", {"quantization": "float32"})] = [
        sys.executable,
        str(script / "stock_onnx_convert.py"),
        str(source.saved_model_dir),
        str(work / "model.onnx"),
    ]
    commands[label("openvino", {"quantization": "float32"})] = [
        sys.executable,
        str(script / "stock_openvino_convert.py"),
        str(source.saved_model_dir),
        str(work / "openvino" / "model.xml"),
    ]
    runs = {}
    for name, command in commands.items():
        wall, stdout = timed(command)
        said = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip().startswith("{") else {}
        runs[name] = {"wall": wall, "convert": said.get("convert_seconds")}
    return runs


def measure(model: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    engine = engine_run(model, work / "engine")
    (work / "stock").mkdir()
    stock = stock_runs(model, work / "stock")
    stages = {
        stage: sum(e["seconds"].get(stage, 0.0) for e in engine["exports"])
        for stage in ("load", "convert", "verify", "publish")
    }
    stock_total = sum(run["wall"] for run in stock.values())
    without_verify = engine["wall"] - stages["verify"]
    per_format = []
    for export in engine["exports"]:
        theirs = stock[export["format"]]
        per_format.append(
            {
                "format": export["format"],
                "engine_convert": export["seconds"]["convert"],
                "engine_verify": export["seconds"]["verify"],
                "stock_wall": theirs["wall"],
                "stock_convert": theirs["convert"],
            }
        )
    slower = [row for row in per_format if row["stock_convert"] and row["engine_convert"] > row["stock_convert"]]
    return {
        "model": str(model),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": len(os.sched_getaffinity(0)),
        "engine_wall": engine["wall"],
        "engine_without_verify": without_verify,
        "engine_stages": stages,
        "engine_peak_bytes": engine["peakMemoryBytes"],
        "stock_total": stock_total,
        "per_format": per_format,
        "goals": {
            "all formats under 0.5x the stock tools (verification included)": {
                "met": engine["wall"] < 0.5 * stock_total,
                "value": f"{engine['wall'] / stock_total:.2f}x",
            },
            "each format's conversion stage no slower than the stock tool's": {
                "met": not slower,
                "value": ", ".join(f"{r['format']} {r['engine_convert'] / r['stock_convert']:.2f}x" for r in slower)
                or "all at most 1.00x",
            },
            "peak memory under 3 GiB": {
                "met": engine["peakMemoryBytes"] < 3 * GIB,
                "value": f"{engine['peakMemoryBytes'] / GIB:.2f} GiB",
            },
        },
    }


def markdown(result: dict) -> str:
    stages = result["engine_stages"]
    lines = [
        f"Model {result['model']}, {result['cpus']} CPUs. Engine: one process, one TensorFlow import, "
        "each export verified. Stock: each tool a whole command, one after another.",
        "",
        "| | seconds | x stock total |",
        "| --- | --- | --- |",
        f"| engine, every format, verification included | {result['engine_wall']:.1f} "
        f"| {result['engine_wall'] / result['stock_total']:.2f} |",
        f"| engine without its verification stage | {result['engine_without_verify']:.1f} "
        f"| {result['engine_without_verify'] / result['stock_total']:.2f} |",
        f"| stock tools, one after another | {result['stock_total']:.1f} | 1.00 |",
        "",
        "Engine stages summed over the exports (load includes the one TensorFlow import): "
        + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items())
        + f"; peak memory (VmHWM) {result['engine_peak_bytes'] / (1 << 30):.2f} GiB.",
        "",
        "| format | engine convert s | engine verify s | stock whole command s | stock conversion s | convert ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["per_format"]:
        stock_convert = row["stock_convert"]
        ratio = f"{row['engine_convert'] / stock_convert:.2f}" if stock_convert else "-"
        lines.append(
            f"| {row['format']} | {row['engine_convert']:.1f} | {row['engine_verify']:.1f} | {row['stock_wall']:.1f} "
            f"| {'-' if stock_convert is None else f'{stock_convert:.1f}'} | {ratio} |"
        )
    slower = [r for r in result["per_format"] if r["stock_convert"] and r["engine_convert"] > r["stock_convert"]]
    if slower:
        lines += ["", "Where the engine's conversion is slower, what its convert stage does beyond the stock tool's:"]
        for row in slower:
            why = BEYOND_STOCK.get(row["format"].split()[0], "see the converter")
            lines.append(f"- {row['format']} (+{row['engine_convert'] - row['stock_convert']:.1f} s): {why}.")
    lines += ["", "| goal | met | measured |", "| --- | --- | --- |"]
    for goal, verdict in result["goals"].items():
        lines.append(f"| {goal} | {'yes' if verdict['met'] else 'NO'} | {verdict['value']} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--engine-child":
        engine_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: a 224x224 sample)")
    args = parser.parse_args()
    result = measure(sample_model(args.model))
    save("export-speed", result, markdown(result))


if __name__ == "__main__":
    main()
