"""Benchmark: every TFLite mode and the SavedModel, measured against each other in one run.

    .venv/bin/python benchmarks/tflite_artifacts.py [--model DIR] [--runs 200]

For a 224x224 sample model (trained once into .cache/benchmark-models/ when --model is not given)
it measures, per artifact: file size, single-image latency on 1 and 2 threads (median of --runs
after warm-up; the SavedModel in TensorFlow, each TFLite mode in ai_edge_litert), top-1 agreement
with the source and accuracy on the held-out images (from the export's own verification); and
the engine's export time per mode against the plain TFLiteConverter script of
stock_tflite_convert.py, both as whole commands (TensorFlow import counted) and as conversion
alone (import not counted). Ratios are against baselines measured in the same run. Writes JSON
and Markdown into benchmarks/results/ and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from harness import REPO, dir_size, engine_export, sample_model, save, timed

MODES = ("float32", "float16", "dynamic_range", "uint8", "int8")

GOALS = (
    ("uint8 size <= 0.30x float32", lambda r: r["uint8"]["size_ratio"] <= 0.30),
    ("uint8 1-thread latency <= 0.6x float32", lambda r: r["uint8"]["latency_ratio_1"] <= 0.6),
    ("uint8 top-1 agreement >= 98%", lambda r: r["uint8"]["agreement"] >= 0.98),
    ("uint8 accuracy drop <= 1 point", lambda r: r["savedmodel"]["accuracy"] - r["uint8"]["accuracy"] <= 0.01),
)


def stock_export(saved_model: Path, calibration: Path, size: int, mode: str, out: Path) -> dict:
    wall, stdout = timed(
        [
            sys.executable,
            str(REPO / "benchmarks" / "stock_tflite_convert.py"),
            str(saved_model),
            mode,
            str(calibration),
            str(size),
            str(out),
        ]
    )
    return {"wall": wall, "convert": json.loads(stdout)["convert_seconds"]}


def median_ms(run, runs: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def tflite_latency(path: Path, threads: int, image: np.ndarray, runs: int) -> float:
    from exporter.core.tflite_model import TFLiteModel

    model = TFLiteModel(path, threads=threads)
    return median_ms(lambda: model.predict_one(image), runs)


def savedmodel_latency(saved_model: Path, threads: int, image_file: Path, runs: int) -> float:
    """In a fresh process: TensorFlow's thread pools are fixed at start."""
    _, stdout = timed(
        [sys.executable, __file__, "--tf-latency", str(saved_model), str(threads), str(image_file), str(runs)]
    )
    return float(stdout.strip())


def _tf_latency_main(saved_model: str, threads: str, image_file: str, runs: str) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    name = next(iter(serve.structured_input_signature[1]))
    image = tf.constant(np.load(image_file)[None])
    print(median_ms(lambda: serve(**{name: image}), int(runs)))


def measure(model: Path, runs: int) -> dict:
    from converters.verification import make_reference
    from exporter.core.model_source import read_model

    source = read_model(model)
    reference = make_reference(source)
    image = reference.inputs[0]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    np.save(work / "image.npy", image)

    rows: dict[str, dict] = {
        "savedmodel": {
            "artifact": "SavedModel",
            "runtime": "tensorflow",
            "bytes": dir_size(source.saved_model_dir),
            "latency_1": savedmodel_latency(source.saved_model_dir, 1, work / "image.npy", runs),
            "latency_2": savedmodel_latency(source.saved_model_dir, 2, work / "image.npy", runs),
            "agreement": 1.0,
            "accuracy": float((reference.scores.argmax(1) == reference.images.labels).mean()),
        }
    }
    for mode in MODES:
        engine = engine_export(model, "tflite", {"quantization": mode}, work / "engine")
        stock = stock_export(
            source.saved_model_dir, source.calibration_dir, source.height, mode, work / f"stock-{mode}.tflite"
        )
        check = engine["report"]["checks"]["verification"]
        tflite = engine["dir"] / "model.tflite"
        rows[mode] = {
            "artifact": f"tflite {mode}",
            "runtime": "ai_edge_litert",
            "bytes": tflite.stat().st_size,
            "latency_1": tflite_latency(tflite, 1, image, runs),
            "latency_2": tflite_latency(tflite, 2, image, runs),
            "agreement": check["agreeing"] / check["decided"],
            "accuracy": check["artifact_accuracy"],
            "engine_wall": engine["wall"],
            "stock_wall": stock["wall"],
            "engine_convert": engine["convert"],
            "stock_convert": stock["convert"],
        }
    base = rows["float32"]
    for row in rows.values():
        row["size_ratio"] = row["bytes"] / base["bytes"]
        row["latency_ratio_1"] = row["latency_1"] / base["latency_1"]
    return {
        "model": str(model),
        "input": f"{source.height}x{source.width}",
        "runs": runs,
        "heldout_images": len(reference.images),
        "cpus": os.cpu_count(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": rows,
        "goals": {name: bool(check(rows)) for name, check in GOALS},
    }


def markdown(result: dict) -> str:
    lines = [
        f"Model {result['model']} ({result['input']}), {result['heldout_images']} held-out images, "
        f"latency = median of {result['runs']} single-image runs after 10 warm-up runs, {result['cpus']} CPUs.",
        "",
        "| artifact | runtime | size | x float32 | 1-thread ms | 2-thread ms | x float32 (1 thread) "
        "| top-1 agreement | accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"].values():
        lines.append(
            f"| {row['artifact']} | {row['runtime']} | {row['bytes'] / 1e6:.2f} MB | {row['size_ratio']:.2f} "
            f"| {row['latency_1']:.2f} | {row['latency_2']:.2f} | {row['latency_ratio_1']:.2f} "
            f"| {row['agreement']:.2%} | {row['accuracy']:.2%} |"
        )
    lines += [
        "",
        "Export time per mode: the engine (`exporter export`: convert, embed metadata, verify on the "
        "held-out images, publish) against the plain TFLiteConverter script. 'Whole command' counts "
        "the TensorFlow import and everything each does; 'conversion' is the conversion alone, "
        "import not counted.",
        "",
        "| mode | engine whole command s | stock whole command s | ratio | engine conversion s "
        "| stock conversion s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode in MODES:
        row = result["rows"][mode]
        lines.append(
            f"| {mode} | {row['engine_wall']:.1f} | {row['stock_wall']:.1f} | "
            f"{row['engine_wall'] / row['stock_wall']:.2f} | {row['engine_convert']:.1f} | "
            f"{row['stock_convert']:.1f} | {row['engine_convert'] / row['stock_convert']:.2f} |"
        )
    lines += ["", "| goal | met |", "| --- | --- |"]
    lines += [f"| {name} | {'yes' if met else 'NO'} |" for name, met in result["goals"].items()]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--tf-latency":
        _tf_latency_main(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: a 224x224 sample)")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    result = measure(sample_model(args.model), args.runs)
    save("tflite", result, markdown(result))


if __name__ == "__main__":
    main()
