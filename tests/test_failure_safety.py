"""A full disk, Ctrl-C, SIGTERM and a crashing converter: a clear error, nothing half-written."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import EXPORTER, exports_in, tflite_config
from converters import REGISTRY
from exporter.core.errors import Code, ExportError
from exporter.run import export_model


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs: too small for the digits model. Needs root, as CI has; fails loudly without."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs for the full-disk test: {mounted.stderr}"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_is_resource_exhausted_and_cleaned(digits_model, tiny_disk):
    with pytest.raises(ExportError) as raised:
        export_model(digits_model, tflite_config(tiny_disk, "float32"))
    assert raised.value.code is Code.RESOURCE_EXHAUSTED
    assert "No space left on device" in raised.value.message
    assert exports_in(tiny_disk) == []


def test_a_crashing_converter_leaves_nothing(canary_model, tmp_path, monkeypatch):
    converter = REGISTRY["tflite"]

    def crash_halfway(source, workdir, params):
        (workdir / "model.tflite").write_bytes(b"half a model")
        raise RuntimeError("converter blew up")

    monkeypatch.setattr(converter, "convert", crash_halfway)
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, tflite_config(tmp_path, "uint8"))
    assert raised.value.code is Code.INTERNAL
    assert raised.value.message == "convert of tflite failed: RuntimeError: converter blew up"
    assert exports_in(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum,exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_export_removes_the_staging_folder(digits_model, tmp_path, signum, exit_code):
    process = subprocess.Popen(
        [
            str(EXPORTER),
            "export",
            "--model",
            str(digits_model),
            "--output",
            str(tmp_path),
            "--param",
            "quantization=uint8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".partial") for p in exports_in(tmp_path)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the export never started staging"
        time.sleep(0.05)
    time.sleep(3)  # inside the conversion, which runs in a child process under the limits
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert children, "convert and verify run in a child process"
    signalled = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    stopped_after = time.monotonic() - signalled
    assert process.returncode == exit_code, stderr
    assert stderr.strip().splitlines()[-1].startswith("exporter: CANCELLED: ")
    assert exports_in(tmp_path) == []
    # The computation stops with the command, within 2 s: the child is gone, not left converting.
    assert stopped_after < 2, stopped_after
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "the child outlived the command"
