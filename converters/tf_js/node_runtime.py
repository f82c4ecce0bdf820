"""Running JavaScript verification scripts in Node.js with the project's node_modules.

The JavaScript side (``package.json`` and its lock file at the project root) is installed by the
set-up (``npm ci``); a missing Node.js or missing packages is a FAILED_PRECONDITION that says
how to install them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from exporter.core.errors import Code, ExportError

PROJECT = Path(__file__).resolve().parents[2]  # the checkout: converters/tf_js/ is two levels down
SCRIPTS = Path(__file__).resolve().parent / "js"
REQUIRED = ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")


def node_modules() -> Path:
    return Path(os.environ.get("EXPORTER_NODE_MODULES", PROJECT / "node_modules"))


def check_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "Node.js is not on PATH: tf_js exports are verified in Node.js 20 with the wasm backend; "
            "install Node.js and run 'npm ci' in the project folder ('make setup' does both)",
        )
    missing = [name for name in REQUIRED if not (node_modules() / name / "package.json").is_file()]
    if missing:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"the JavaScript packages {', '.join(missing)} are not installed in {node_modules()}: "
            "run 'npm ci' in the project folder ('make setup' does)",
        )
    return node


class BackendRefused(ExportError):
    """A tfjs backend cannot run the model (an op or a shape it does not support): a runtime's
    limit, FAILED_PRECONDITION, not a failure of the engine."""

    def __init__(self, backend: str, reason: str):
        super().__init__(Code.FAILED_PRECONDITION, f"the tfjs {backend} backend cannot run the model: {reason}")
        self.backend, self.reason = backend, reason


REFUSED_STATUS = 3  # tfjs_predict.js exits with it when the backend refuses the model


def tfjs_predict(
    model_dir: Path, inputs: np.ndarray, backend: str = "wasm", timeout: float = 600
) -> tuple[np.ndarray, dict]:
    """Scores [N, C] of the tfjs graph model in `model_dir` on float inputs [N, H, W, 3], in
    Node.js on `backend` (wasm or cpu). Raises BackendRefused when the backend cannot run it."""
    node = check_node()
    count, height, width, _ = inputs.shape
    with tempfile.TemporaryDirectory(prefix="tfjs-") as work:
        inputs_file, outputs_file = Path(work) / "inputs.bin", Path(work) / "scores.bin"
        np.ascontiguousarray(inputs, dtype=np.float32).tofile(inputs_file)
        env = {**os.environ, "NODE_PATH": str(node_modules())}
        script = SCRIPTS / "tfjs_predict.js"
        arguments = [str(model_dir), str(inputs_file), str(count), str(height), str(width), str(outputs_file)]
        result = subprocess.run(
            [node, str(script), *arguments, backend],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        last_line = (result.stdout.strip().splitlines() or ["{}"])[-1]
        if result.returncode == REFUSED_STATUS:
            raise BackendRefused(backend, " ".join(json.loads(last_line)["refused"].split())[:400])
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(Code.INTERNAL, f"Node.js could not run the tf_js model: {last}")
        info = json.loads(last_line)
        scores = np.fromfile(outputs_file, dtype=np.float32).reshape(count, info["classes"])
    return scores, info
