"""What a benchmark target is: where an artifact runs, how it gets there, and how it is timed.

A target takes the artifacts of some formats, says up front when this machine cannot run it
(``check``), and ``measure`` returns the runner's JSON: the phases timed apart, latency
percentiles, images/s, peak memory, runtime and version, accuracy and agreement computed where it
ran. ``NotRunnable`` carries the reason a row shows; any other error of one cell is recorded on
that row and the matrix goes on.
"""

from __future__ import annotations

import abc
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

RUNNERS = Path(__file__).resolve().parent.parent / "runners"
MISSING_STATUS = 3  # the runners exit with it when a runtime or device is missing


class NotRunnable(Exception):
    """This target cannot run this artifact here; the message is the row's reason."""


class RunnerFailed(Exception):
    """A runner started but failed; the message is its last line of output."""


@dataclass(frozen=True)
class Artifact:
    """One exported artifact (or the source SavedModel) as targets see it."""

    model_format: str  # a modelFormat, or "source" for the model folder's own SavedModel
    params: dict[str, str]
    folder: Path  # the export folder (for "source": the SavedModel folder)


@dataclass(frozen=True)
class Workload:
    """The held-out images every target runs, and how long the steady state lasts."""

    data_dir: Path  # inputs.f32 (normalized), pixels.u8, meta.json and png/ (see runners/tflite_runner.py)
    images: int
    min_count: int
    min_seconds: float
    warmup: int

    def runner_options(self) -> list[str]:
        return [
            f"--min-count={self.min_count}",
            f"--min-seconds={self.min_seconds}",
            f"--warmup={self.warmup}",
        ]


@dataclass
class Target(abc.ABC):
    """One place to run artifacts of `formats`."""

    name: str
    formats: tuple[str, ...] = field(default=())

    def check(self) -> None:  # noqa: B027 (most targets need nothing but their runner)
        """Raise NotRunnable when this machine cannot run the target at all."""

    @abc.abstractmethod
    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        """Run `artifact` on the workload here; the runner's JSON."""


def tflite_feed(model: Path) -> list[str]:
    """The runner's --mean and --std: the normalization the model's own metadata tells its
    consumers to apply (MediaPipe reads the same); none for a file without metadata."""
    from converters.tflite.metadata import read_metadata

    found = read_metadata(model.read_bytes())
    if found is None:
        return []
    return [f"--mean={','.join(map(str, found['mean']))}", f"--std={','.join(map(str, found['std']))}"]


def run_json(command: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """A local runner's last line of JSON; its 'missing' answer becomes NotRunnable."""
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ), check=False
        )
    except subprocess.TimeoutExpired:
        raise RunnerFailed(f"the runner did not finish within {timeout:.0f} s") from None
    return parse_runner_output(result.returncode, result.stdout, result.stderr)


def parse_runner_output(status: int, stdout: str, stderr: str) -> dict:
    lines = stdout.strip().splitlines()
    if status == MISSING_STATUS and lines:
        raise NotRunnable(json.loads(lines[-1])["missing"])
    if status != 0 or not lines:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise RunnerFailed(f"the runner exited with status {status}: {last}")
    return json.loads(lines[-1])
