"""Targets on this machine's CPU: TensorFlow (the source and the serving SavedModel),
``ai_edge_litert`` at a number of threads, with XNNPACK on or off, onnxruntime (CPU execution
provider) and OpenVINO's CPU plugin at a number of threads.

Each row runs in a fresh process: thread pools are fixed when a runtime starts, and the row's
peak memory must be its runner's own.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from exporter.benchmark.targets.base import RUNNERS, Artifact, Target, Workload, run_json, tflite_feed

TIMEOUT = 1800


def runner_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@dataclass
class TensorFlowCpu(Target):
    threads: int = 0

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        kind = "source" if artifact.model_format == "source" else "serving"
        command = [sys.executable, str(RUNNERS / "tf_runner.py"), str(artifact.folder), str(workload.data_dir)]
        command += [f"--kind={kind}", f"--threads={self.threads}", *workload.runner_options()]
        return run_json(command, TIMEOUT, runner_env())


@dataclass
class LiteRtCpu(Target):
    threads: int = 1
    xnnpack: bool = True

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        model = artifact.folder / "model.tflite"
        command = [sys.executable, str(RUNNERS / "tflite_runner.py"), str(model), str(workload.data_dir)]
        command += ["--runtime=ai_edge_litert", f"--threads={self.threads}", *tflite_feed(model)]
        if not self.xnnpack:
            command.append("--no-xnnpack")
        return run_json(command + workload.runner_options(), TIMEOUT, runner_env())


@dataclass
class RuntimeCpu(Target):
    """A runner that needs only the model file and the thread count (onnx_runner, openvino_runner)."""

    runner: str = ""
    model_file: str = ""
    threads: int = 1

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        model = artifact.folder / self.model_file
        command = [sys.executable, str(RUNNERS / self.runner), str(model), str(workload.data_dir)]
        command += [f"--threads={self.threads}", *workload.runner_options()]
        return run_json(command, TIMEOUT, runner_env())


def tensorflow_cpu() -> TensorFlowCpu:
    return TensorFlowCpu("tf-cpu", ("source", "tf_saved_model"), threads=os.cpu_count() or 1)


def litert_cpu() -> list[LiteRtCpu]:
    """1, 2 and 4 threads, each with XNNPACK (the default delegate) and without it."""
    return [
        LiteRtCpu(f"litert-cpu-{threads}t" + ("" if xnnpack else "-noxnnpack"), ("tflite",), threads, xnnpack)
        for threads in (1, 2, 4)
        for xnnpack in (True, False)
    ]


def onnxruntime_cpu() -> list[RuntimeCpu]:
    """1, 2 and 4 threads, as the LiteRT rows."""
    return [
        RuntimeCpu(f"onnxruntime-cpu-{threads}t", ("onnx",), "onnx_runner.py", "model.onnx", threads)
        for threads in (1, 2, 4)
    ]


def openvino_cpu() -> list[RuntimeCpu]:
    """1, 2 and 4 threads, as the LiteRT rows, at the inference precision the IR states (f32)."""
    return [
        RuntimeCpu(f"openvino-cpu-{threads}t", ("openvino",), "openvino_runner.py", "model.xml", threads)
        for threads in (1, 2, 4)
    ]
