"""The command line as a user runs it: real exports, and one clear line for every bad input."""

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
import time

import numpy as np
import pytest

from conftest import EXPORTER, exports_in, run_cli

pytestmark = pytest.mark.slow


def one_error_line(result, code: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"exporter: {code}: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_export_json(canary_model, tmp_path):
    result = run_cli(
        "export",
        "--model",
        str(canary_model),
        "--format",
        "tflite",
        "--output",
        str(tmp_path),
        "--param",
        "quantization=uint8",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    (folder,) = exports_in(tmp_path)
    assert answer["outputDir"] == str(folder)
    assert answer["report"]["checks"]["verification"]["passed"]
    assert set(answer["seconds"]) == {"load", "convert", "verify", "publish"}


def test_export_with_file_uri_and_summary_table(canary_model, tmp_path):
    result = run_cli(
        "export", "--model", str(canary_model), "--output", f"file://{tmp_path}/sub", "--param", "quantization=float32"
    )
    assert result.returncode == 0, result.stderr
    assert "agreement" in result.stdout and "model.tflite" in result.stdout
    assert "stages" not in result.stderr  # no progress bar on a pipe
    (folder,) = exports_in(tmp_path / "sub")
    assert (folder / "model.tflite").stat().st_size > 0


def run_on_a_terminal(*args: str, columns: int = 120, timeout: float = 300) -> tuple[int, str]:
    """The console script with stdout and stderr on a pseudo-terminal, as in a user's shell:
    (exit status, everything it wrote)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "TERM", "NO_COLOR")}
    process = subprocess.Popen([str(EXPORTER), *args], stdout=follower, stderr=follower, env={**env, "TERM": "xterm"})
    os.close(follower)
    written, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other end closed: the process has exited
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    return process.wait(timeout=10), written.decode(errors="replace")


def test_a_terminal_shows_the_progress_bar_then_the_summary(canary_model, tmp_path):
    status, written = run_on_a_terminal(
        "export", "--model", str(canary_model), "--output", str(tmp_path), "--param", "quantization=float32"
    )
    assert status == 0, written
    # The bar's own column ("N/4 stages") is drawn while the export runs, then the summary table.
    assert re.search(r"\d/4 stages", written), written
    assert written.rindex("stages") < written.index("agreement")
    (folder,) = exports_in(tmp_path)
    assert (folder / "model.tflite").stat().st_size > 0


@pytest.mark.parametrize(
    "args,code,exit_code,text",
    [
        (
            ["--param", "quantization=int4"],
            "INVALID_ARGUMENT",
            2,
            "allowed values: uint8, int8, float16, dynamic_range, float32",
        ),
        (["--param", "quantization"], "INVALID_ARGUMENT", 2, "expected KEY=VALUE"),
        (["--param", "colour=red"], "INVALID_ARGUMENT", 2, "allowed keys: quantization, calibration_count"),
        (["--format", "onnx"], "INVALID_ARGUMENT", 2, "'onnx' is not a model format"),
        (["--input-size", "big"], "INVALID_ARGUMENT", 2, "expected HxW"),
        (["--bogus-flag"], "INVALID_ARGUMENT", 2, "No such option"),
    ],
)
def test_bad_arguments(canary_model, tmp_path, args, code, exit_code, text):
    destination = tmp_path / "out"
    result = run_cli("export", "--model", str(canary_model), "--output", str(destination), *args)
    assert result.returncode == exit_code
    assert text in one_error_line(result, code)
    assert not destination.exists()


def test_missing_model_folder(tmp_path):
    result = run_cli("export", "--model", str(tmp_path / "none"), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "does not exist" in one_error_line(result, "NOT_FOUND")
    assert not (tmp_path / "out").exists()


def test_corrupt_model_folder(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff")
    destination = tmp_path / "out"
    result = run_cli("export", "--model", str(folder), "--output", str(destination))
    assert result.returncode == 2
    assert "not a readable SavedModel" in one_error_line(result, "INVALID_ARGUMENT")
    assert not destination.exists()


def test_corrupt_variables_fail_cleanly(canary_model, model_copy, tmp_path):
    folder = model_copy(canary_model)
    for shard in (folder / "saved_model" / "variables").glob("variables.data-*"):
        shard.write_bytes(b"\x00" * 16)
    destination = tmp_path / "out"
    result = run_cli("export", "--model", str(folder), "--output", str(destination))
    assert result.returncode == 1
    assert "convert of tflite failed" in one_error_line(result, "INTERNAL")
    assert exports_in(destination) == []  # the staging folder is gone too


def test_output_that_cannot_be_written(canary_model, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("export", "--model", str(canary_model), "--output", str(blocker / "sub"))
    assert result.returncode == 1
    assert "cannot write to the destination" in one_error_line(result, "FAILED_PRECONDITION")
    assert blocker.read_text() == "not a folder"


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "export", "--model", str(tmp_path / "none"), "--output", str(tmp_path))
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_version_and_short_help():
    from importlib.metadata import version

    shown = run_cli("--version")
    assert shown.returncode == 0 and shown.stdout == f"exporter {version('automl-export-engine')}\n"
    for args in (["-h"], ["export", "-h"]):
        helped = run_cli(*args)
        assert helped.returncode == 0 and helped.stdout.startswith("Usage: exporter"), helped.stderr


def test_formats_table(tmp_path):
    result = run_cli("formats", "--json")
    assert result.returncode == 0
    rows = {row["modelFormat"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"tflite", "edgetpu_tflite", "tf_saved_model", "tf_js", "core_ml", "docker"}
    assert rows["docker"]["destination"] == "gcrDestination"
    assert {
        "name": "quantization",
        "default": "uint8",
        "allowed": "uint8, int8, float16, dynamic_range, float32",
    }.items() <= rows["tflite"]["params"][0].items()
    table = run_cli("formats")
    assert table.returncode == 0 and "edgetpu_tflite" in table.stdout


def test_sample_model_is_deterministic_under_its_seed(canary_model, tmp_path):
    """The CLI trains the canary again with the same seed: the same model comes out."""
    out = tmp_path / "canary"
    result = run_cli("sample-model", str(out), "--kind", "colour-canary", "--size", "32")
    assert result.returncode == 0, result.stderr
    assert re.search(r"held-out accuracy \d+\.\d%", result.stdout)
    import tensorflow as tf

    probe = np.random.default_rng(1).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    scores = [
        tf.saved_model.load(str(m / "saved_model")).signatures["serving_default"](image=probe)["probabilities"].numpy()
        for m in (canary_model, out)
    ]
    np.testing.assert_array_equal(scores[0], scores[1])
    again = run_cli("sample-model", str(out), "--kind", "colour-canary", "--if-missing")
    assert again.returncode == 0 and "left as it is" in again.stderr
