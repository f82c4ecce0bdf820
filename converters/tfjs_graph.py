"""tensorflowjs' conversion of a SavedModel, from a graph no platform-specific rewrite touched.

TensorFlow's oneDNN graph rewrites (on by default on x86) fuse Conv + HardSwish into
``_FusedHardSwish`` and similar ops that no tfjs backend implements, so a MobileNetV3 converted
under them runs nowhere. The switch (``TF_ENABLE_ONEDNN_OPTS=0``) is read when TensorFlow is
imported: where this process already runs TensorFlow with the rewrites on, the conversion runs
in a fresh Python process with them off (``python -m converters.tfjs_graph``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from converters.base import library_failure
from exporter.core.errors import Code, ExportError
from exporter.core.model_source import SERVING_KEY

ONEDNN_SETTING = "TF_ENABLE_ONEDNN_OPTS"
QUANTIZATION_MAPS = {"float32": None, "float16": {"float16": "*"}, "uint8": {"uint8": "*"}}
# What tensorflowjs raises when it refuses a model (not a crash of ours).
REFUSALS = (ValueError, NotImplementedError, TypeError)


def _convert_here(saved_model: Path, workdir: Path, quantization: str, shard_size_bytes: int) -> None:
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs

    tfjs.convert_tf_saved_model(
        str(saved_model),
        str(workdir),
        signature_def=SERVING_KEY,
        saved_model_tags="serve",
        quantization_dtype_map=QUANTIZATION_MAPS[quantization],
        weight_shard_size_bytes=shard_size_bytes,
    )


def rewrites_off_here() -> bool:
    """Whether TensorFlow in this process converts without the oneDNN rewrites."""
    return os.environ.get(ONEDNN_SETTING) == "0"


def convert_graph(saved_model: Path, workdir: Path, quantization: str, shard_size_bytes: int) -> None:
    if rewrites_off_here():
        try:
            _convert_here(saved_model, workdir, quantization, shard_size_bytes)
        except REFUSALS as error:
            raise library_failure("tensorflowjs", error) from error
        return
    arguments = [str(saved_model), str(workdir), quantization, str(shard_size_bytes)]
    done = subprocess.run(
        [sys.executable, "-m", "converters.tfjs_graph", *arguments],
        env={**os.environ, ONEDNN_SETTING: "0", "TF_CPP_MIN_LOG_LEVEL": "3"},
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


def main(arguments: list[str]) -> int:
    saved_model, workdir, quantization, shard_size_bytes = arguments
    try:
        _convert_here(Path(saved_model), Path(workdir), quantization, int(shard_size_bytes))
    except REFUSALS as error:
        print(json.dumps({"refused": library_failure("tensorflowjs", error).message.split(": ", 1)[-1]}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
