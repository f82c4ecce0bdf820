"""The benchmark's SSH device target against a real OpenSSH server on loopback.

Five devices in one inventory: one that runs the artifacts (this machine's Python with
ai_edge_litert, onnxruntime and OpenVINO, standing in for a device's runtimes), one whose runtime is missing, one without
the named Python, one whose host key does not match known_hosts, and one that is unreachable.
Each row says what happened, the rest of the matrix runs, and nothing is left in the devices'
folders.
"""

import sys

import pytest

from exporter.benchmark import benchmark_model
from exporter.benchmark.rows import NOT_RUNNABLE, PASSED
from sshd_harness import free_port, keygen, start_sshd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server, process = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    process.terminate()
    process.wait(timeout=10)


def _device(name, server, workdir, **overrides):
    entry = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        "python": sys.executable,
        "runtime": "ai_edge_litert",
        "threads": 2,
        "workdir": str(workdir),
        **overrides,
    }
    lines = [f"[devices.{name}]"] + [
        f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}" for key, value in entry.items()
    ]
    return "\n".join(lines).replace("'", '"') + "\n"


@pytest.fixture(scope="module")
def ssh_run(sshd, canary_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("ssh-bench")
    workdirs = {name: root / f"device-{name}" for name in ("good", "noruntime", "nopython", "badkey", "down")}
    for folder in workdirs.values():
        folder.mkdir()
    wrong_key = root / "other_host_key"
    wrong_type, wrong_blob = keygen(wrong_key)
    wrong_known_hosts = root / "wrong_known_hosts"
    wrong_known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {wrong_type} {wrong_blob}\n")
    inventory = root / "devices.toml"
    inventory.write_text(
        _device("good", sshd, workdirs["good"])
        + _device("noruntime", sshd, workdirs["noruntime"], runtime="tflite_runtime")
        + _device("nopython", sshd, workdirs["nopython"], python="no-such-python3")
        + _device("badkey", sshd, workdirs["badkey"], known_hosts=str(wrong_known_hosts))
        + _device("down", sshd, workdirs["down"], port=free_port())
    )
    result = benchmark_model(
        canary_model,
        ["tflite:quantization=uint8", "onnx", "openvino"],
        ["ssh", "litert-cpu-1t", "onnxruntime-cpu-1t", "openvino-cpu-1t"],
        output=root / "report",
        runs=20,
        min_seconds=0.1,
        warmup=3,
        inventory=inventory,
    )
    tflite = {row.target: row for row in result.rows if row.model_format == "tflite"}
    others = {(row.model_format, row.target): row for row in result.rows if row.model_format != "tflite"}
    return tflite, workdirs, others


def test_device_runs_the_artifact_and_reports_its_own_numbers(ssh_run):
    rows, workdirs, _ = ssh_run
    row = rows["ssh:good"]
    assert row.status == PASSED, row.reason
    assert row.runtime == "ai_edge_litert" and row.runtime_version and row.threads == 2
    assert 0 < row.p50_ms <= row.p90_ms <= row.p99_ms
    assert row.steady_runs >= 20 and row.images_per_s > 0 and row.peak_memory_bytes > 0
    assert row.agreement == pytest.approx(rows["litert-cpu-1t"].agreement) and row.agreement >= 0.97
    assert row.accuracy is not None and row.accuracy > 0.9
    assert list(workdirs["good"].iterdir()) == []  # the run's folder is gone


def test_missing_runtime_is_the_rows_status_and_nothing_is_left(ssh_run):
    rows, workdirs, _ = ssh_run
    row = rows["ssh:noruntime"]
    assert row.status == NOT_RUNNABLE
    assert "device noruntime" in row.reason and "tflite_runtime is not installed" in row.reason
    assert row.p50_ms is None
    assert list(workdirs["noruntime"].iterdir()) == []


def test_missing_python_is_the_rows_status(ssh_run):
    rows, workdirs, _ = ssh_run
    row = rows["ssh:nopython"]
    assert row.status == NOT_RUNNABLE and "no-such-python3 is not found on the device" in row.reason, row.reason
    assert list(workdirs["nopython"].iterdir()) == []


def test_host_key_mismatch_refuses_to_connect(ssh_run):
    rows, workdirs, _ = ssh_run
    row = rows["ssh:badkey"]
    assert row.status == NOT_RUNNABLE and "host key mismatch" in row.reason, row.reason
    assert list(workdirs["badkey"].iterdir()) == []


def test_unreachable_device_is_a_row_and_the_matrix_goes_on(ssh_run):
    rows, _, _ = ssh_run
    assert rows["ssh:down"].status == NOT_RUNNABLE and "is unreachable" in rows["ssh:down"].reason
    assert rows["litert-cpu-1t"].status == PASSED


@pytest.mark.parametrize(
    "model_format, runtime, local",
    [("onnx", "onnxruntime", "onnxruntime-cpu-1t"), ("openvino", "openvino", "openvino-cpu-1t")],
)
def test_device_runs_onnx_and_openvino_artifacts_in_their_runtimes(ssh_run, model_format, runtime, local):
    _, workdirs, rows = ssh_run
    row = rows[model_format, "ssh:good"]
    assert row.status == PASSED, row.reason
    assert row.runtime == runtime and row.runtime_version and row.threads == 2
    assert 0 < row.p50_ms <= row.p90_ms <= row.p99_ms and row.steady_runs >= 20
    assert row.agreement == pytest.approx(rows[model_format, local].agreement) and row.agreement >= 0.97
    assert list(workdirs["good"].iterdir()) == []
