"""Every run is bounded: the CLI converts and verifies in a child process under the
EXPORTER_SANDBOX_* limits, with --sandbox or without. Models built of allowed operations can still
be memory or CPU bombs (a Tile sized from the input, the determinant of a huge matrix); they end as
RESOURCE_EXHAUSTED naming the limit and the setting that raises it, with nothing published.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import EXPORTER
from test_op_policy import classifier_folder


def _export(model: Path, output: Path, *extra: str, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXPORTER), "export", "--model", str(model), "--format", "tf_saved_model", "--output", str(output), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **settings},
    )


def _nothing_published(output: Path) -> None:
    left = [p.name for p in output.iterdir()] if output.exists() else []
    assert all(name.startswith(".") and name.endswith(".failed") for name in left), left


@pytest.fixture(scope="module")
def tile_bomb(canary_model, tmp_path_factory) -> Path:
    """Each 32x32 image tiled 400x400 times: about 2 GB of float32 per image, from allowed ops."""
    import tensorflow as tf

    def tile(image, logits):
        return logits + tf.reduce_mean(tf.tile(image, [1, 400, 400, 1]))

    return classifier_folder(tmp_path_factory.mktemp("tile") / "model", canary_model, tile)


@pytest.fixture(scope="module")
def determinant_bomb(canary_model, tmp_path_factory) -> Path:
    """The determinant of a 6000x6000 matrix made from the input: minutes of CPU, little memory."""
    import tensorflow as tf

    def determinant(image, logits):
        size = 6000
        matrix = tf.tile(tf.reshape(image[0, 0, 0, 0], [1, 1]), [size, size]) + tf.eye(size)
        return logits + tf.linalg.det(matrix)

    return classifier_folder(tmp_path_factory.mktemp("det") / "model", canary_model, determinant)


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", [[], ["--sandbox"]], ids=["limits", "bubblewrap"])
def test_a_memory_bomb_is_resource_exhausted_naming_the_setting(tile_bomb, tmp_path, sandbox):
    done = _export(tile_bomb, tmp_path / "out", *sandbox, EXPORTER_SANDBOX_MEMORY_MB="1500")
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("exporter: RESOURCE_EXHAUSTED: "), last
    assert "EXPORTER_SANDBOX_MEMORY_MB" in last
    _nothing_published(tmp_path / "out")


@pytest.mark.slow
def test_a_cpu_bomb_is_resource_exhausted_naming_the_setting(determinant_bomb, tmp_path):
    done = _export(determinant_bomb, tmp_path / "out", EXPORTER_SANDBOX_CPU_SECONDS="20")
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("exporter: RESOURCE_EXHAUSTED: "), last
    assert "CPU-time limit (20 s" in last and "EXPORTER_SANDBOX_CPU_SECONDS" in last
    _nothing_published(tmp_path / "out")
