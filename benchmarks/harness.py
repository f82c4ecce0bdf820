"""What the benchmark scripts share: running commands, the engine's export, the sample model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MODEL = REPO / ".cache" / "benchmark-models" / "digits-224"
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TFDF_DISABLE_WELCOME_MESSAGE": "1"}


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout of a command; a failure stops the benchmark with its stderr."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=QUIET)
    if result.returncode != 0:
        raise SystemExit(f"benchmark: {' '.join(command[:3])} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started, result.stdout


def serve_quietly(port: int, env: dict[str, str]) -> subprocess.Popen:
    """`exporter serve` on loopback, in a session of its own (stopped with its workers as one
    group), its output discarded: the benchmark measures the server, it does not show it."""
    return subprocess.Popen(
        [str(BIN / "exporter"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def engine_export(model: Path, model_format: str, params: dict[str, str], out: Path) -> dict:
    """`exporter export` as a user runs it: wall seconds, stage seconds, folder and report."""
    command = [
        str(BIN / "exporter"),
        "export",
        "--model",
        str(model),
        "--output",
        str(out),
        "--format",
        model_format,
        "--json",
    ]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    wall, stdout = timed(command)
    answer = json.loads(stdout)
    return {
        "wall": wall,
        "convert": answer["seconds"]["convert"],
        "dir": Path(answer["outputDir"]),
        "report": answer["report"],
    }


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sample_model(model: Path | None) -> Path:
    """The given model folder, or the 224x224 digits sample model (trained once)."""
    if model is not None:
        return model
    if not (DEFAULT_MODEL / "manifest.json").exists():
        print(f"training the 224x224 sample model into {DEFAULT_MODEL} (once) ...", file=sys.stderr)
        timed([str(BIN / "exporter"), "sample-model", str(DEFAULT_MODEL), "--size", "224"])
    return DEFAULT_MODEL


def save(name: str, result: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{name}-{result['time'].replace(':', '')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
