"""``exporter benchmark``: the benchmark matrix from the command line.

Prints the matrix as a table on stdout (with each row's reason when it did not pass) and writes
benchmark.json, .csv, .md and the charts into --output. Exit status 0 when the matrix ran, failing
cells included; 1 when --baseline finds regressions; 2 for a bad argument.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from exporter.core.errors import Code, ExportError

TARGETS_HELP = (
    "targets or families, comma-separated or repeated: tf-cpu, litert (litert-cpu-{1,2,4}t[-noxnnpack]), "
    "node-wasm, chromium-wasm, tf-serving, edgetpu, ssh (ssh:<device> from --inventory), all (default)"
)
FORMATS_HELP = (
    "FORMAT[:KEY=VALUE...] entries, comma-separated or repeated, e.g. tflite:quantization=uint8; "
    "'source' is the model's own SavedModel (default: source, tflite float32 and uint8, tf_saved_model, "
    "tf_js, edgetpu_tflite, core_ml, docker)"
)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def benchmark(
    model: Annotated[Path, typer.Option(help="model folder (SavedModel, dict.txt, manifest.json)")],
    output: Annotated[Path, typer.Option(help="folder for the report, the charts and the exports")],
    formats: Annotated[list[str] | None, typer.Option(help=FORMATS_HELP)] = None,
    targets: Annotated[list[str] | None, typer.Option(help=TARGETS_HELP)] = None,
    runs: Annotated[int, typer.Option(help="steady state: at least this many images at batch 1")] = 200,
    min_seconds: Annotated[float, typer.Option(help="steady state: and at least this many seconds")] = 2.0,
    warmup: Annotated[int, typer.Option(help="warm-up runs before the steady state")] = 10,
    inventory: Annotated[Path | None, typer.Option(help="TOML file of SSH devices (see docs/benchmarks.md)")] = None,
    baseline: Annotated[Path | None, typer.Option(help="an earlier run's benchmark.json to compare with")] = None,
    margin: Annotated[float, typer.Option(help="regression margin against --baseline (0.1 = 10%)")] = 0.10,
    images: Annotated[
        Path | None, typer.Option(help="calibration and held-out images, when the model folder has none")
    ] = None,
) -> None:
    """Export a model to each format once and time every artifact on every target that runs it."""
    from exporter.benchmark import benchmark_model
    from exporter.terminal import NativeStderr

    # TF_ENABLE_ONEDNN_OPTS is left as it is: the tflite and TensorFlow rows measure TensorFlow as
    # it runs by default, and a tf_js export converts in a fresh process without oneDNN's rewrites
    # (converters/tf_js/graph.py), as the service's workers do.
    format_list = _split(formats)
    with NativeStderr() as native:
        result = benchmark_model(
            model,
            format_list,
            _split(targets),
            output=output,
            runs=runs,
            min_seconds=min_seconds,
            warmup=warmup,
            inventory=inventory,
            baseline=baseline,
            margin=margin,
            images=images,
            console=native.console if sys.stderr.isatty() else None,
        )
    _print_table(result.rows)
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    if result.regressions:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"{len(result.regressions)} rows regressed beyond {margin:.0%} against {baseline} "
            f"(see {result.files['markdown']})",
        )


def _print_table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="benchmark", show_lines=False)
    for column in (
        "format",
        "target",
        "status",
        "size MB",
        "accuracy",
        "agreement",
        "p50 ms",
        "p99 ms",
        "img/s",
        "peak MB",
        "export s",
    ):
        table.add_column(column)

    def fmt(value, pattern):
        return "-" if value is None else pattern.format(value)

    for row in rows:
        table.add_row(
            row.label,
            row.target,
            row.status,
            fmt(row.size_bytes and row.size_bytes / 1e6, "{:.2f}"),
            fmt(row.accuracy, "{:.2%}"),
            fmt(row.agreement, "{:.2%}"),
            fmt(row.p50_ms, "{:.3g}"),
            fmt(row.p99_ms, "{:.3g}"),
            fmt(row.images_per_s, "{:.4g}"),
            fmt(row.peak_memory_bytes and row.peak_memory_bytes / 1e6, "{:.0f}"),
            fmt(row.export_seconds, "{:.1f}"),
        )
    console = Console(width=max(160, Console().width))
    console.print(table)
    for row in rows:
        if row.reason:
            console.print(f"{row.label} on {row.target}: {row.status}: {row.reason}", highlight=False, soft_wrap=True)
