"""tensorflowjs' conversion of a SavedModel, from a graph no platform-specific rewrite touched.

TensorFlow's oneDNN graph rewrites (on by default on x86) fuse Conv + HardSwish into
``_FusedHardSwish`` and similar ops that no tfjs backend implements, so a MobileNetV3 converted
under them runs nowhere. The switch (``TF_ENABLE_ONEDNN_OPTS=0``) is read when TensorFlow is
imported: where this process already runs TensorFlow with the rewrites on, the conversion runs
in a fresh Python process with them off (``python -m converters.tf_js.graph``). That process dies
with the one that started it (a worker killed mid-export must not leave it writing into a staging
folder that the operation's next attempt has already cleaned).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from converters.base import library_failure
from exporter.core.errors import Code, ExportError
from exporter.core.model_source import SERVING_KEY

ONEDNN_SETTING = "TF_ENABLE_ONEDNN_OPTS"
PARENT_SETTING = "EXPORTER_TFJS_PARENT_PID"  # the process whose death ends the conversion process
PR_SET_PDEATHSIG = 1  # prctl(2)
QUANTIZATION_MAPS = {"float32": None, "float16": {"float16": "*"}, "uint8": {"uint8": "*"}}
# What tensorflowjs raises when it refuses a model (not a crash of ours).
REFUSALS = (ValueError, NotImplementedError, TypeError)


def _convert_here(
    saved_model: Path, workdir: Path, quantization: str, shard_size_bytes: int, metadata: dict | None = None
) -> None:
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs

    tfjs.convert_tf_saved_model(
        str(saved_model),
        str(workdir),
        signature_def=SERVING_KEY,
        saved_model_tags="serve",
        quantization_dtype_map=QUANTIZATION_MAPS[quantization],
        weight_shard_size_bytes=shard_size_bytes,
        metadata=metadata,  # model.json's userDefinedMetadata: GraphModel.metadata in tfjs
    )


def rewrites_off_here() -> bool:
    """Whether TensorFlow in this process converts without the oneDNN rewrites."""
    return os.environ.get(ONEDNN_SETTING) == "0"


def convert_graph(
    saved_model: Path, workdir: Path, quantization: str, shard_size_bytes: int, metadata: dict | None = None
) -> None:
    """Convert `saved_model` into `workdir`; `metadata` becomes model.json's userDefinedMetadata."""
    if rewrites_off_here():
        try:
            _convert_here(saved_model, workdir, quantization, shard_size_bytes, metadata)
        except REFUSALS as error:
            raise library_failure("tensorflowjs", error) from error
        return
    arguments = [str(saved_model), str(workdir), quantization, str(shard_size_bytes), json.dumps(metadata)]
    done = subprocess.run(
        [sys.executable, "-m", "converters.tf_js.graph", *arguments],
        env={**os.environ, ONEDNN_SETTING: "0", "TF_CPP_MIN_LOG_LEVEL": "3", PARENT_SETTING: str(os.getpid())},
        capture_output=True,
        text=True,
        check=False,
    )
    last = (done.stdout.strip().splitlines() or ["{}"])[-1]
    try:
        answer = json.loads(last)
    except ValueError:
        answer = {}
    if done.returncode == 0 and answer.get("ok"):
        return
    if "refused" in answer:
        raise ExportError(Code.FAILED_PRECONDITION, f"tensorflowjs cannot convert this model: {answer['refused']}")
    tail = " ".join((done.stderr.strip().splitlines() or ["no output"])[-3:])
    raise ExportError(Code.INTERNAL, f"the tensorflowjs conversion process failed: {tail[-400:]}")


def die_with_parent() -> None:
    """SIGKILL this process when the one that started it dies (Linux' parent-death signal)."""
    parent = int(os.environ.get(PARENT_SETTING, "0"))
    if not parent or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)


def main(arguments: list[str]) -> int:
    die_with_parent()
    saved_model, workdir, quantization, shard_size_bytes, metadata = arguments
    try:
        _convert_here(Path(saved_model), Path(workdir), quantization, int(shard_size_bytes), json.loads(metadata))
    except REFUSALS as error:
        print(json.dumps({"refused": library_failure("tensorflowjs", error).message.split(": ", 1)[-1]}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
