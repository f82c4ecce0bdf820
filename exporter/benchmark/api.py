"""The benchmark as one function: check the request, run the matrix, write the report."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from converters.load_scope import shared_loads
from exporter.benchmark import charts, report
from exporter.benchmark.baseline import DEFAULT_MARGIN, compare, read_baseline
from exporter.benchmark.formats import FormatSpec, parse_formats
from exporter.benchmark.inventory import load_inventory
from exporter.benchmark.matrix import prepare_workload, run_format
from exporter.benchmark.rows import Row
from exporter.benchmark.targets import resolve_targets
from exporter.core.errors import Code, ExportError

FILES = {
    "json": "benchmark.json",
    "csv": "benchmark.csv",
    "markdown": "benchmark.md",
    "latency_chart": "latency_vs_size.png",
    "export_chart": "export_time.png",
}


@dataclass(frozen=True)
class BenchmarkResult:
    rows: list[Row]
    report: dict  # what benchmark.json holds (rows as Row objects)
    files: dict[str, Path]  # what was written, by kind (see FILES)
    regressions: list[dict]  # against the baseline; empty without one


def benchmark_model(
    model: str | Path,
    formats: list[str] | None = None,
    targets: list[str] | None = None,
    *,
    output: str | Path,
    runs: int = 200,
    min_seconds: float = 2.0,
    warmup: int = 10,
    inventory: str | Path | None = None,
    baseline: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
    images: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    console: Console | None = None,
) -> BenchmarkResult:
    """Benchmark the model folder `model` and write the report into `output`.

    `formats` are ``FORMAT[:KEY=VALUE...]`` entries (``source`` is the model's own SavedModel);
    `targets` are target names or families (see ``exporter.benchmark.targets``); None means all.
    The steady state runs at least `runs` images and `min_seconds` at batch 1. `inventory` names
    the SSH devices; `baseline` an earlier run's benchmark.json to flag regressions beyond
    `margin`. Bad arguments raise ExportError (INVALID_ARGUMENT) before anything runs; a failing
    cell is its row's status and the rest still runs.
    """
    specs = parse_formats(formats)
    devices = load_inventory(inventory) if inventory is not None else []
    chosen = resolve_targets(targets, devices)
    if runs < 1 or min_seconds < 0 or warmup < 0 or not 0 <= margin < 10:
        raise ExportError(
            Code.INVALID_ARGUMENT, "--runs must be at least 1, --min-seconds and --warmup at least 0, --margin 0..10"
        )
    earlier = read_baseline(baseline) if baseline is not None else None
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)

    from exporter.core.model_source import read_model
    from exporter.run import readable_model

    read_options = {"images": images, "input_size": input_size}
    # One private copy of the model, one load of it and one reference run for every export of the
    # matrix: the exports below join this scope and read the same copy.
    with tempfile.TemporaryDirectory(prefix="benchmark-") as work, shared_loads(), readable_model(model) as folder:
        source = read_model(folder, images=images, input_size=input_size)
        workload, source_accuracy = prepare_workload(source, Path(work) / "data", runs, min_seconds, warmup)
        rows = _run_matrix(
            Path(model), source, specs, chosen, workload, out / "exports", source_accuracy, console, read_options
        )

    result = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "displayName": source.display_name,
            "digest": source.content_digest(),
            "input": f"{source.height}x{source.width}",
            "heldoutImages": workload.images,
            "sourceAccuracy": source_accuracy,
        },
        "machine": report.describe_machine(),
        "settings": {"minCount": runs, "minSeconds": min_seconds, "warmup": warmup, "batch": 1},
        "rows": rows,
    }
    regressions: list[dict] = []
    if earlier is not None:
        regressions = compare(rows, earlier, margin)
        result["baseline"] = {"file": str(baseline), "margin": margin, "machine": earlier.get("machine")}
        result["regressions"] = regressions
    return BenchmarkResult(rows, result, _write(result, out), regressions)


def _run_matrix(
    model, source, specs: list[FormatSpec], targets, workload, exports, source_accuracy, console, read_options
) -> list[Row]:
    steps = sum(1 + len([t for t in targets if spec.model_format in t.formats]) for spec in specs)
    bar = Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=console is None,
        transient=True,
    )
    unavailable: dict[str, str | None] = {}  # a target's reason, checked once
    rows: list[Row] = []
    with bar:
        task = bar.add_task("benchmark", total=steps)

        def tick(done: str) -> None:
            bar.update(task, advance=1, description=done[:48])

        for spec in specs:
            bar.update(task, description=f"exporting {spec.label}"[:48])
            rows += run_format(
                model, source, spec, targets, workload, exports, tick, unavailable, source_accuracy, **read_options
            )
    return rows


def _write(result: dict, out: Path) -> dict[str, Path]:
    files = {kind: out / name for kind, name in FILES.items()}
    report.write_json(result, files["json"])
    report.write_csv(result["rows"], files["csv"])
    files["markdown"].write_text(report.markdown(result) + "\n")
    if not charts.latency_vs_size(result["rows"], files["latency_chart"]):
        del files["latency_chart"]
    if not charts.export_times(result["rows"], files["export_chart"]):
        del files["export_chart"]
    return files
