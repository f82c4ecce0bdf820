"""Benchmark: tf_js in Node.js and Chromium (wasm), Core ML size, and export times, in one run.

    .venv/bin/python benchmarks/js_coreml_artifacts.py [--model DIR] [--images 50]

For the 224x224 sample model (or --model): per tf_js quantization, the size of model.json and
its shards and the mean single-image latency after 3 warm-up runs in Node.js and in headless
Chromium (both on the wasm backend); per Core ML model type, the artifact's size (Core ML cannot
predict on Linux, so no latency). Export time per artifact: the engine (`exporter export`, with
its verification) against the stock `tensorflowjs_converter` command and the plain coremltools
script stock_coreml_convert.py, both timed as whole commands (TensorFlow import counted).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from harness import BIN, REPO, dir_size, engine_export, sample_model, save, timed

TFJS_FLAGS = {"float32": [], "float16": ["--quantize_float16", "*"], "uint8": ["--quantize_uint8", "*"]}
COREML = (("neuralnetwork", "float32"), ("mlprogram", "float16"))


def measure(model: Path, images: int) -> dict:
    from converters.tf_js.browser import browser_predict
    from converters.tf_js.node_runtime import tfjs_predict
    from converters.verification import make_reference
    from exporter.core.model_source import read_model

    source = read_model(model)
    inputs = make_reference(source, limit=images).inputs
    work = Path(tempfile.mkdtemp(prefix="bench-js-"))
    rows = []
    for quantization, flags in TFJS_FLAGS.items():
        engine = engine_export(model, "tf_js", {"quantization": quantization}, work / "engine")
        stock_wall, _ = timed(
            [
                str(BIN / "tensorflowjs_converter"),
                "--input_format=tf_saved_model",
                "--signature_name=serving_default",
                "--saved_model_tags=serve",
                *flags,
                str(source.saved_model_dir),
                str(work / f"stock-{quantization}"),
            ]
        )
        _, node = tfjs_predict(engine["dir"], inputs)
        _, chromium = browser_predict(engine["dir"], inputs)
        check = engine["report"]["checks"]["verification"]
        rows.append(
            {
                "artifact": f"tf_js {quantization}",
                "bytes": dir_size(engine["dir"]) - dir_size(engine["dir"] / "export_report.json"),
                "node_ms": node["msPerImage"],
                "chromium_ms": chromium["msPerImage"],
                "agreement": check["agreeing"] / check["decided"],
                "engine_wall": engine["wall"],
                "stock_wall": stock_wall,
            }
        )
    for model_type, precision in COREML:
        engine = engine_export(model, "core_ml", {"model_type": model_type, "precision": precision}, work / "engine")
        artifact = "model.mlpackage" if model_type == "mlprogram" else "model.mlmodel"
        stock_wall, _ = timed(
            [
                sys.executable,
                str(REPO / "benchmarks" / "stock_coreml_convert.py"),
                str(source.saved_model_dir),
                str(source.root / "dict.txt"),
                str(source.height),
                model_type,
                str(work / f"stock-{artifact}"),
            ]
        )
        rows.append(
            {
                "artifact": f"core_ml {model_type} {precision}",
                "bytes": dir_size(engine["dir"] / artifact),
                "node_ms": None,
                "chromium_ms": None,
                "agreement": None,
                "engine_wall": engine["wall"],
                "stock_wall": stock_wall,
            }
        )
    return {
        "model": str(model),
        "input": f"{source.height}x{source.width}",
        "images": len(inputs),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"Model {result['model']} ({result['input']}); latency = mean single-image milliseconds over "
        f"{result['images']} held-out images after 3 warm-up runs, wasm backend.",
        "",
        "| artifact | size | Node.js ms | Chromium ms | top-1 agreement (export's verification) "
        "| engine export s | stock tool s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        agreement = "-" if row["agreement"] is None else f"{row['agreement']:.2%}"
        lines.append(
            f"| {row['artifact']} | {row['bytes'] / 1e6:.2f} MB | {ms(row['node_ms'])} | {ms(row['chromium_ms'])} "
            f"| {agreement} | {row['engine_wall']:.1f} | {row['stock_wall']:.1f} "
            f"| {row['engine_wall'] / row['stock_wall']:.2f} |"
        )
    lines += [
        "",
        "Export times are whole commands (TensorFlow import counted); the engine's include "
        "its verification (Node.js for tf_js, the spec checks for Core ML), which the stock "
        "tools do not do.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: a 224x224 sample)")
    parser.add_argument("--images", type=int, default=50, help="images for the latency runs")
    args = parser.parse_args()
    result = measure(sample_model(args.model), args.images)
    save("js-coreml", result, markdown(result))


if __name__ == "__main__":
    main()
