"""The Edge TPU compiler's back ends, one class each behind one interface: the binary on PATH (or
from settings), else its container image through a Docker engine, else a FAILED_PRECONDITION that
says how to install it.

The compiler writes ``<name>_edgetpu.tflite`` and ``<name>_edgetpu.log`` into the output folder
(with ``-n N``: ``<name>_segment_<i>_of_<N>_edgetpu.tflite``) and a summary on stdout, which is
parsed into the export report.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from exporter.core.errors import Code, ExportError

COMPILER_SETTING = "EXPORTER_EDGETPU_COMPILER"
IMAGE_SETTING = "EXPORTER_EDGETPU_IMAGE"
# Set by the sandbox in its child: there the Docker engine is out of reach, so only a binary compiles.
SANDBOXED_SETTING = "EXPORTER_SANDBOXED"
DEFAULT_IMAGE = "automl-export-engine/edgetpu-compiler:16"
INSTALL_HINT = (
    "install the Edge TPU compiler (x86_64 Linux) from Coral's apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/: apt-get install edgetpu-compiler), or set "
    f"{COMPILER_SETTING} to its path, or build its image with a Docker engine: "
    f"docker build -t {DEFAULT_IMAGE} containers/edgetpu"
)


@dataclass
class Compiled:
    backend: str  # the compiler's back end: "binary" or "image"
    command: list[str]
    stdout: str
    models: list[Path]  # the compiled model, or its segments in order
    log: Path | None  # the compiler's operation log
    summary: dict = field(default_factory=dict)


class EdgeTpuCompiler(abc.ABC):
    """One way to run edgetpu_compiler on a folder; ``compile`` is the same for every back end."""

    kind: str

    @abc.abstractmethod
    def run(self, arguments: list[str], folder: Path, timeout: float) -> tuple[list[str], int, str]:
        """Run the compiler in `folder`; the command as shown, its exit status and its output."""

    def compile(self, model: Path, min_runtime_version: str, num_segments: int, timeout: float = 600) -> Compiled:
        """Compile `model` (in its own folder) into that folder."""
        folder = model.parent
        arguments = ["-s", "-o", ".", "-m", min_runtime_version]
        if num_segments > 1:
            arguments += ["-n", str(num_segments)]
        arguments.append(model.name)
        command, status, output = self.run(arguments, folder, timeout)
        if status != 0:
            last = " ".join(output.strip().splitlines()[-3:]) or f"exit status {status}"
            raise ExportError(Code.FAILED_PRECONDITION, f"edgetpu_compiler failed: {last}")
        stem = model.stem
        if num_segments > 1:
            models = [folder / f"{stem}_segment_{i}_of_{num_segments}_edgetpu.tflite" for i in range(num_segments)]
        else:
            models = [folder / f"{stem}_edgetpu.tflite"]
        missing = [m.name for m in models if not m.is_file()]
        if missing:
            raise ExportError(Code.FAILED_PRECONDITION, f"edgetpu_compiler wrote no {', '.join(missing)}")
        log = next(iter(sorted(folder.glob(f"{stem}*_edgetpu.log"))), None)
        return Compiled(self.kind, command, output, models, log, parse_summary(output))


class BinaryCompiler(EdgeTpuCompiler):
    """The edgetpu_compiler executable on this machine."""

    kind = "binary"

    def __init__(self, path: str):
        self.path = path

    def run(self, arguments: list[str], folder: Path, timeout: float) -> tuple[list[str], int, str]:
        command = [self.path, *arguments]
        try:
            done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ExportError(Code.DEADLINE_EXCEEDED, f"edgetpu_compiler ran past {timeout:g} s") from None
        return command, done.returncode, done.stdout + done.stderr


class ImageCompiler(EdgeTpuCompiler):
    """The compiler's container image (``containers/edgetpu/Dockerfile``) run through a Docker engine."""

    kind = "image"

    def __init__(self, client, image: str):
        self.client, self.image = client, image

    def run(self, arguments: list[str], folder: Path, timeout: float) -> tuple[list[str], int, str]:
        command = [f"docker run {self.image}", *arguments]
        container = self.client.containers.run(
            self.image,
            arguments,
            detach=True,
            working_dir="/work",
            volumes={str(folder): {"bind": "/work", "mode": "rw"}},
        )
        try:
            status = container.wait(timeout=timeout)
            output = container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
        return command, int(status.get("StatusCode", 1)), output

    @classmethod
    def present(cls, image: str) -> ImageCompiler | None:
        try:
            import docker

            client = docker.from_env(timeout=5)
            client.images.get(image)
            return cls(client, image)
        except Exception:  # no engine, no socket, or no image: all mean this back end is not here
            return None


def find_compiler() -> EdgeTpuCompiler:
    """The first back end that exists here; FAILED_PRECONDITION with the install hint otherwise."""
    configured = os.environ.get(COMPILER_SETTING)
    if configured:
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            raise ExportError(Code.FAILED_PRECONDITION, f"{COMPILER_SETTING}={configured} is not an executable file")
        return BinaryCompiler(configured)
    found = shutil.which("edgetpu_compiler")
    if found:
        return BinaryCompiler(found)
    if os.environ.get(SANDBOXED_SETTING):
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "no edgetpu_compiler binary inside the export sandbox (the compiler's container image needs "
            "the Docker engine, which the sandbox does not reach): install edgetpu_compiler on the "
            f"worker's PATH or set {COMPILER_SETTING} to its path, or run exports unsandboxed "
            "(EXPORTER_SANDBOX=off; the CLI without --sandbox)",
        )
    image = ImageCompiler.present(os.environ.get(IMAGE_SETTING, DEFAULT_IMAGE))
    if image is not None:
        return image
    raise ExportError(Code.FAILED_PRECONDITION, f"no Edge TPU compiler on this machine: {INSTALL_HINT}")


_NUMBERS = {
    "compilerVersion": r"Edge TPU Compiler version (\S+)",
    "onChipMemoryUsed": r"On-chip memory used for caching model parameters: (\S+)",
    "onChipMemoryRemaining": r"On-chip memory remaining for caching model parameters: (\S+)",
    "offChipMemoryUsed": r"Off-chip memory used for streaming uncached model parameters: (\S+)",
    "edgeTpuSubgraphs": r"Number of Edge TPU subgraphs: (\d+)",
    "totalOperations": r"Total number of operations: (\d+)",
    "operationsOnEdgeTpu": r"Number of operations that will run on Edge TPU: (\d+)",
    "operationsOnCpu": r"Number of operations that will run on CPU: (\d+)",
}
_OP_ROW = re.compile(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$")


def parse_summary(text: str) -> dict:
    """The compiler's stdout summary: versions, memory, op counts and the operator table."""
    summary: dict = {}
    for key, pattern in _NUMBERS.items():
        values = re.findall(pattern, text)
        if values:
            summary[key] = (
                [int(v) if v.isdigit() else v for v in values]
                if len(values) > 1
                else (int(values[0]) if values[0].isdigit() else values[0])
            )
    summary["operators"] = [
        {"operator": m.group(1), "count": int(m.group(2)), "status": m.group(3)}
        for line in text.splitlines()
        if (m := _OP_ROW.match(line.strip()))
    ]
    if "totalOperations" in summary and "operationsOnEdgeTpu" not in summary:
        # A fully mapped model prints no per-device counts.
        summary["operationsOnEdgeTpu"] = summary["totalOperations"]
    return summary
