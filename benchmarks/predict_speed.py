"""Benchmark: `exporter predict` on a .tflite against a plain ai_edge_litert script, time to first result.

    .venv/bin/python benchmarks/predict_speed.py [--model MODEL.tflite --images A B C] [--runs 5]

Without --model, the 224x224 digits sample model (trained once into .cache/benchmark-models/) is
exported to tflite with the engine's defaults and three of its held-out images are classified.
Each command runs in a fresh process, --runs times, the two alternating after one untimed warm-up
of each: (a) ``exporter predict MODEL A B C``, the command a user runs, and (b) a plain script that
loads the model in ``ai_edge_litert.interpreter.Interpreter``, decodes and resizes the images with
Pillow, feeds them normalized as the metadata says and prints each top label. Prints the median
wall seconds to the first line of output and to exit, the ratios (a)/(b) measured in the same run
(goal: both <= 1.5x), each command's peak resident memory, and the load average around the runs. The
top labels of the two are checked to agree. Writes JSON and Markdown into benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import BIN, QUIET, REPO, engine_export, sample_model, save

GOAL_RATIO = 1.5

# What a user writes who knows the model's normalization: the interpreter, Pillow and numpy only.
PLAIN_SCRIPT = """
import io, sys, zipfile
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

model, mean, std, *images = sys.argv[1:]
mean = np.array(mean.split(","), np.float32)
std = np.array(std.split(","), np.float32)
with zipfile.ZipFile(model) as archive:
    labels = archive.read("dict.txt").decode().split("\\n")
interpreter = Interpreter(model_path=model)
interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
_, height, width, _ = inp["shape"]
for path in images:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), np.float32)
    x = (pixels - mean) / std
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"])[None])
    interpreter.invoke()
    print(path, labels[int(np.argmax(interpreter.get_tensor(out["index"])[0]))], sep="\\t", flush=True)
"""


def run_measured(command: list[str]) -> dict:
    """Seconds to the first line of stdout and to exit, and peak RSS (MB, the process's own from
    wait4, not the high-water mark over all children that getrusage gives), of one fresh process."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty stderr cannot block the child
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=QUIET)
        process.stdout.readline()
        first = time.perf_counter() - started
        process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        ended = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"benchmark: {' '.join(command[:3])} failed:\n{stderr.read().decode()[-2000:]}")
    return {"first": first, "exit": ended, "peak_mb": usage.ru_maxrss / 1024}


def default_subject() -> tuple[Path, list[Path]]:
    """The digits sample model exported to tflite (engine defaults), and three held-out images."""
    model = sample_model(None)
    out = REPO / ".cache" / "benchmark-models" / "digits-224-tflite"
    found = sorted(out.glob("**/model.tflite"))
    if not found:
        print(f"exporting {model} to tflite into {out} (once) ...", file=sys.stderr)
        found = [engine_export(model, "tflite", {}, out)["dir"] / "model.tflite"]
    heldout = sorted((model / "images" / "heldout").rglob("*.png"))
    return found[0], heldout[:: max(1, len(heldout) // 3)][:3]


def measure(model: Path, images: list[Path], runs: int) -> dict:
    from exporter.core.tflite_metadata_reader import read_tflite_metadata

    metadata = read_tflite_metadata(model.read_bytes())
    if metadata is None:
        raise SystemExit(f"benchmark: {model} has no embedded TFLite metadata")
    engine = [str(BIN / "exporter"), "predict", str(model), *map(str, images)]
    plain = [
        sys.executable,
        "-c",
        PLAIN_SCRIPT,
        str(model),
        ",".join(map(str, metadata["mean"])),
        ",".join(map(str, metadata["std"])),
        *map(str, images),
    ]
    # The two agree on every top label (checked once, untimed, with predict's --json).
    answer = subprocess.run([*engine, "--top-k", "1", "--json"], capture_output=True, text=True, env=QUIET)
    if answer.returncode != 0:
        raise SystemExit(f"benchmark: exporter predict failed:\n{answer.stderr[-2000:]}")
    engine_top = [p["top"][0]["label"] for p in json.loads(answer.stdout)]
    plain_top = [
        line.split("\t")[1]
        for line in subprocess.check_output(plain, env=QUIET, text=True, stderr=subprocess.DEVNULL).splitlines()
    ]

    load_before = os.getloadavg()
    samples: dict[str, list[dict]] = {"engine": [], "plain": []}
    run_measured(engine), run_measured(plain)  # warm-up: page cache and bytecode
    for _ in range(runs):
        samples["engine"].append(run_measured(engine))
        samples["plain"].append(run_measured(plain))
    load_after = os.getloadavg()

    rows = {}
    for name, taken in samples.items():
        rows[name] = {
            "first_s": statistics.median(s["first"] for s in taken),
            "exit_s": statistics.median(s["exit"] for s in taken),
            "peak_mb": max(s["peak_mb"] for s in taken),
            "first_samples": [round(s["first"], 3) for s in taken],
        }
    ratios = {
        "first": rows["engine"]["first_s"] / rows["plain"]["first_s"],
        "exit": rows["engine"]["exit_s"] / rows["plain"]["exit_s"],
    }
    return {
        "model": str(model),
        "images": [str(i) for i in images],
        "runs": runs,
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": rows,
        "ratio_first": ratios["first"],
        "ratio_exit": ratios["exit"],
        "top_labels_agree": engine_top == plain_top,
        # predict prints all its predictions at once, the plain script one line an image: both ratios count
        "goal_met": max(ratios.values()) <= GOAL_RATIO,
    }


def markdown(result: dict) -> str:
    engine, plain = result["rows"]["engine"], result["rows"]["plain"]
    lines = [
        f"Model {result['model']}, {len(result['images'])} images, median of {result['runs']} fresh processes "
        f"each (after one warm-up), {result['cpus']} CPUs, load average {result['load_before'][0]:.2f} before "
        f"and {result['load_after'][0]:.2f} after.",
        "",
        "| command | to first result s | to exit s | peak RSS MB | runs (first result s) |",
        "| --- | --- | --- | --- | --- |",
        f"| `exporter predict` | {engine['first_s']:.2f} | {engine['exit_s']:.2f} | {engine['peak_mb']:.0f} "
        f"| {', '.join(map(str, engine['first_samples']))} |",
        f"| plain ai_edge_litert script | {plain['first_s']:.2f} | {plain['exit_s']:.2f} | {plain['peak_mb']:.0f} "
        f"| {', '.join(map(str, plain['first_samples']))} |",
        "",
        f"`exporter predict` / plain script: {result['ratio_first']:.2f}x to first result, "
        f"{result['ratio_exit']:.2f}x to exit; goal both <= {GOAL_RATIO}x: "
        f"{'met' if result['goal_met'] else 'NOT met'}. Top labels agree: "
        f"{'yes' if result['top_labels_agree'] else 'NO'}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a .tflite export (default: the digits sample's)")
    parser.add_argument("--images", type=Path, nargs="+", default=None, help="image files (with --model)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.model is None:
        model, images = default_subject()
    elif not args.images:
        parser.error("--model needs --images")
    else:
        model, images = args.model, args.images
    result = measure(model, images, args.runs)
    save("predict", result, markdown(result))


if __name__ == "__main__":
    main()
