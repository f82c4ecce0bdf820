"""A Coral Edge TPU attached to this machine: the compiled model through the libedgetpu delegate.

The runner loads ``libedgetpu.so.1`` (or ``EXPORTER_LIBEDGETPU``) as an ai_edge_litert delegate;
without the library, or with the library but no device, the row says which.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from exporter.benchmark.targets.base import RUNNERS, Artifact, NotRunnable, Target, Workload, run_json, tflite_feed
from exporter.benchmark.targets.local import TIMEOUT, runner_env

LIBRARY = "libedgetpu.so.1"


def find_libedgetpu() -> str | None:
    configured = os.environ.get("EXPORTER_LIBEDGETPU")
    if configured:
        return configured if Path(configured).exists() else None
    return LIBRARY if ctypes.util.find_library("edgetpu") else None


@dataclass
class EdgeTpu(Target):
    def check(self) -> None:
        if find_libedgetpu() is None:
            raise NotRunnable(
                f"no Edge TPU runtime: {LIBRARY} is not installed (Coral's libedgetpu1-std package, or "
                "EXPORTER_LIBEDGETPU), so no Edge TPU can be attached here"
            )

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        model = artifact.folder / "edgetpu_model.tflite"
        command = [sys.executable, str(RUNNERS / "tflite_runner.py"), str(model), str(workload.data_dir)]
        command += ["--runtime=ai_edge_litert", "--threads=1", f"--delegate={find_libedgetpu()}"]
        command += tflite_feed(artifact.folder / "model.tflite")  # the compiler keeps the CPU model's input
        return run_json(command + workload.runner_options(), TIMEOUT, runner_env())


def edgetpu() -> EdgeTpu:
    return EdgeTpu("edgetpu", ("edgetpu_tflite",))
