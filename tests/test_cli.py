"""The command line as a user runs it: real exports, and one clear line for every bad input."""

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from conftest import EXPORTER, exports_in, run_cli

pytestmark = pytest.mark.slow


PROGRESS_LINE = re.compile(r"^(load|convert|verify|publish): done in [0-9.]+ s$")


def one_error_line(result, code: str) -> str:
    """The one error line on stderr (the progress lines of the stages done before it left aside)."""
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS_LINE.match(line)]
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
    assert "stages" not in result.stderr  # no progress bar on a pipe: a plain line per stage
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["load", "convert", "verify", "publish"]
    assert all(PROGRESS_LINE.match(line) for line in result.stderr.splitlines()), result.stderr
    (folder,) = exports_in(tmp_path / "sub")
    assert f"folder: {folder}\n" in result.stdout  # whole, on a line of its own, at any width
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
    deep = tmp_path / ("a-long-folder-name-" * 4) / "exports"
    status, written = run_on_a_terminal(
        "export", "--model", str(canary_model), "--output", str(deep), "--param", "quantization=float32", columns=80
    )
    assert status == 0, written
    # The bar's own column ("N/4 stages") is drawn while the export runs, then the summary table.
    assert re.search(r"\d/4 stages", written), written
    assert written.rindex("stages") < written.index("agreement")
    # At 80 columns the table folds long values onto more lines; nothing is cut with an ellipsis.
    assert "…" not in written[written.index("agreement") :]
    (folder,) = exports_in(deep)
    table = written[written.index("folder") :].split("params")[0]
    assert folder.name[-12:] in re.sub(r"[\s│┃|]", "", table)
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
        (["--format", "caffe"], "INVALID_ARGUMENT", 2, "'caffe' is not a model format"),
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


@pytest.mark.parametrize(
    "args,flag_text",
    [
        (["--format", "caffe"], "--format: 'caffe' is not a model format"),
        (["--param", "quantization=int4"], "--param quantization: "),
        (["--param", "colour=red"], "--param colour: unknown param"),
        (["--output", "gs://UPPER/x"], "--output: 'gs://UPPER/x' is not a gs://BUCKET/DIR URI"),
    ],
)
def test_errors_name_the_flag_the_user_typed(canary_model, tmp_path, args, flag_text):
    result = run_cli("export", "--model", str(canary_model), "--output", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    line = one_error_line(result, "INVALID_ARGUMENT")
    assert flag_text in line and "outputConfig" not in line


def test_common_spellings_of_a_format_are_taken_with_a_note(canary_model, tmp_path):
    result = run_cli(
        "export", "--model", str(canary_model), "--output", str(tmp_path), "--format", "TFLite", "--param",
        "quantization=float32", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "exporter: note: --format 'TFLite' taken as 'tflite'"
    assert json.loads(result.stdout)["report"]["modelFormat"] == "tflite"


def test_a_destination_that_cannot_be_written_is_refused_before_tensorflow_loads(canary_model, tmp_path):
    """sysfs refuses a new folder even to root: the probe finds it before any model is read."""
    code = (
        "import sys; from exporter.cli import main; "
        f"status = main(['export', '--model', {str(canary_model)!r}, '--output', '/sys/exporter-out']); "
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(status)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result, "PERMISSION_DENIED")
    assert "cannot write to the destination '/sys/exporter-out'" in line and "write-check" not in line


def test_verify_ends_with_pass_or_fail(tflite_exports, canary_model, model_copy):
    export = tflite_exports["canary", "uint8"][1].output_dir
    passed = run_cli("verify", export, "--model", str(canary_model))
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.splitlines()[-1] == f"PASS {export}: every check is within its tolerance"
    # A source that scales the channels differently from what the artifact folded in (as in
    # tests/test_predict_verify.py): the same pixels reach the two as different colours.
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["input"]["range"]
    manifest["input"].update(mean=[0.0, 0.0, 0.0], std=[255.0, 510.0, 127.5])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    failed = run_cli("verify", export, "--model", str(folder))
    assert failed.returncode == 1
    assert failed.stdout.startswith(f"FAIL {export}: ") and "top-1 differs from the source" in failed.stdout


def test_fast_commands_answer_in_under_a_second():
    """`exporter --help` and `exporter formats` import neither the pipeline nor TensorFlow: the best
    of three runs each is under a second (the best, so a busy machine's one slow start is not held)."""
    for args in (["--help"], ["formats"]):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            assert run_cli(*args).returncode == 0
            times.append(time.perf_counter() - started)
        assert min(times) < 1.0, (args, times)


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
    automl = {"tflite", "edgetpu_tflite", "tf_saved_model", "tf_js", "core_ml", "docker"}
    assert {name for name, row in rows.items() if not row["extension"]} == automl
    assert {name for name, row in rows.items() if row["extension"]} == {"onnx", "openvino"}
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
