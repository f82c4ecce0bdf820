"""The benchmark's report: JSON for machines, CSV and Markdown tables, and the machine it ran on."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path

from exporter.benchmark.rows import FIELDS, Row


def describe_machine() -> dict:
    """What the numbers were measured on: CPU model and count, memory, OS, Python."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory = next(
        (line.split()[1] for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), None
    )
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "architecture": platform.machine(),
        "memoryBytes": int(memory) * 1024 if memory else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def write_json(result: dict, path: Path) -> None:
    data = {**result, "rows": [row.as_dict() for row in result["rows"]]}
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _share(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def _bytes(value) -> str:
    return "-" if value is None else f"{value / 1e6:.2f} MB"


def _gigabytes(value) -> str:
    return "-" if value is None else f"{value / 1e9:.1f} GB"


def markdown(result: dict) -> str:
    machine = result["machine"]
    settings = result["settings"]
    lines = [
        f"Model {result['model']['displayName']} ({result['model']['input']}), {result['model']['heldoutImages']} "
        f"held-out images; steady state: at least {settings['minCount']} runs and {settings['minSeconds']} s at "
        f"batch 1 after {settings['warmup']} warm-up runs. Machine: {machine['cpus']} x {machine['architecture']} "
        f"({machine['cpu']}), {_gigabytes(machine['memoryBytes'])} memory, {machine['os']}.",
        "",
        "| format | target | status | size | accuracy | agreement | load+init ms | first ms | warm-up ms "
        "| p50 ms | p90 ms | p99 ms | images/s | peak memory | threads | runtime | export s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        status = row.status + (f" ({row.reason})" if row.reason else "")
        if row.regression:
            status += f" **regression: {row.regression}**"
        runtime = f"{row.runtime} {row.runtime_version}" if row.runtime else "-"
        lines.append(
            f"| {row.label} | {row.target} | {status.replace('|', '/')} | {_bytes(row.size_bytes)} "
            f"| {_share(row.accuracy)} | {_share(row.agreement)} | {_number(row.load_init_ms)} "
            f"| {_number(row.first_inference_ms)} | {_number(row.warmup_ms)} | {_number(row.p50_ms)} "
            f"| {_number(row.p90_ms)} | {_number(row.p99_ms)} | {_number(row.images_per_s, 4)} "
            f"| {_bytes(row.peak_memory_bytes)} | {row.threads if row.threads is not None else '-'} "
            f"| {runtime} | {_number(row.export_seconds)} |"
        )
    if "baseline" in result:
        regressions = result["regressions"]
        lines += [
            "",
            f"Against {result['baseline']['file']} (margin {result['baseline']['margin']:.0%}): "
            + (f"{len(regressions)} regressions." if regressions else "no regressions."),
        ]
    return "\n".join(lines)
