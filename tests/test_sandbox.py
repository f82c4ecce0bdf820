"""The sandbox for convert and verify: its guarantees tested with code run inside it, a real
sandboxed export, and the service's setting. Nothing here is mocked: bubblewrap must be
installed (scripts/setup.sh installs it), and these tests fail where it is not."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError, FieldViolation
from exporter.run import export_model
from exporter.sandbox import LIMITS_ONLY, Limits, Sandbox
from service_harness import PARENT, Server

CONFINEMENT_PROBE = """
import os, socket
out = {}
def attempt(name, step):
    try:
        step()
        out[name] = "ok"
    except Exception as error:
        out[name] = type(error).__name__
def write(path):
    with open(path, "w") as handle:
        handle.write("written from the sandbox")
def read(path):
    with open(path) as handle:
        return handle.read()
attempt("connect", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=5).close())
attempt("write_model", lambda: write(MODEL + "/planted.txt"))
attempt("write_outside", lambda: write(OUTSIDE + "/planted.txt"))
attempt("write_test_folder", lambda: write(TEST_FOLDER + "/planted.txt"))
attempt("read_secret", lambda: read(SECRET))
attempt("read_model", lambda: read(MODEL + "/weights.txt"))
attempt("write_staging", lambda: write(STAGING + "/artifact.txt"))
attempt("write_tmp", lambda: write("/tmp/scratch.txt"))
out["uid"], out["gid"] = os.getuid(), os.getgid()
out["capabilities"] = [line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff:")][0]
result = out
"""


def probe(sandbox: Sandbox, folders: dict[str, Path], port: int) -> dict:
    code = CONFINEMENT_PROBE.replace("PORT", str(port))
    for name, path in folders.items():
        code = code.replace(name, repr(str(path)))
    return sandbox.run_python(code, writable=[folders["STAGING"]], read_only=[folders["MODEL"]])


@pytest.fixture
def folders(tmp_path):
    model, staging, outside = tmp_path / "model", tmp_path / "staging", tmp_path / "outside"
    for folder in (model, staging, outside):
        folder.mkdir()
    (model / "weights.txt").write_text("weights")
    (outside / "secret.txt").write_text("a host secret")
    return {
        "MODEL": model,
        "STAGING": staging,
        "OUTSIDE": outside,
        "TEST_FOLDER": tmp_path,
        "SECRET": outside / "secret.txt",
    }


@pytest.fixture
def listener():
    """A TCP server on loopback that counts the connections it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def test_bubblewrap_can_start_here():
    assert Sandbox().unavailable() is None  # scripts/setup.sh installs bubblewrap


def test_sandbox_confines_network_files_and_user(folders, listener):
    port, accepted = listener
    out = probe(Sandbox(), folders, port)
    assert out["connect"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert accepted == []
    # the model folder is a read-only bind; the rest of the host is not there at all
    assert out["write_model"] == "OSError" and out["write_outside"] in ("OSError", "FileNotFoundError")
    # the test's own folder lies under /tmp, which is the sandbox's private tmpfs: a write there
    # lands in that tmpfs and is gone with the sandbox (checked below: nothing on the host)
    assert out["write_test_folder"] in ("ok", "OSError", "FileNotFoundError")
    assert out["read_secret"] == "FileNotFoundError"
    assert not (folders["MODEL"] / "planted.txt").exists()
    assert not (folders["OUTSIDE"] / "planted.txt").exists()
    assert not (folders["TEST_FOLDER"] / "planted.txt").exists()
    # what it may do: read the model, write the staging folder and its own /tmp
    assert out["read_model"] == "ok" and out["write_tmp"] == "ok"
    assert out["write_staging"] == "ok"
    assert (folders["STAGING"] / "artifact.txt").read_text() == "written from the sandbox"
    assert (out["uid"], out["gid"]) == (65534, 65534)
    assert int(out["capabilities"], 16) == 0


def test_the_probe_sees_what_a_process_without_namespaces_may_do(folders, listener):
    """The same probe, limits only: everything the sandbox refused succeeds, so the probe is real."""
    port, accepted = listener
    out = probe(Sandbox(isolation=LIMITS_ONLY), folders, port)
    assert out["connect"] == "ok" and out["read_secret"] == "ok" and out["write_outside"] == "ok"


SYSCALL_PROBE = """
import ctypes, errno, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    return "ok" if getattr(libc, name)(*args) != -1 else errno.errorcode[ctypes.get_errno()]
def traced_child():
    # PTRACE_TRACEME in a child of its own, which exits at once: the caller is never stopped
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.ptrace(0, 0, 0, 0) != -1 else 1)
    return "ok" if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 else "EPERM"
out = {
    "unshare_user": call("unshare", 0x10000000),
    "keyctl": call("syscall", 250, 0, -3, 0),
    "ptrace": traced_child(),
    # what converters do must go on: threads, processes, a program started by a child
    "thread": [threading.Thread(target=lambda: None).start(), "ok"][1],
    "subprocess": subprocess.run(["/bin/sh", "-c", "echo started"], capture_output=True, text=True).stdout.strip(),
}
result = out
"""


@pytest.mark.parametrize("isolation", ["bubblewrap", LIMITS_ONLY])
def test_system_calls_outside_a_converters_needs_are_refused(isolation):
    out = Sandbox(isolation=isolation).run_python(SYSCALL_PROBE)
    assert out == {
        "unshare_user": "EPERM",
        "keyctl": "EPERM",
        "ptrace": "EPERM",
        "thread": "ok",
        "subprocess": "started",
    }


def test_the_syscall_probe_succeeds_without_the_filter(tmp_path):
    """The same probe in a plain process (its own, so unshare changes nothing here): the calls work."""
    script = tmp_path / "probe.py"
    script.write_text(SYSCALL_PROBE + "\nimport json\nprint(json.dumps(result))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    out = json.loads(done.stdout)
    assert out["unshare_user"] == "ok" and out["keyctl"] == "ok" and out["ptrace"] == "ok"


def test_memory_limit_is_resource_exhausted(tmp_path):
    with pytest.raises(ExportError) as caught:
        Sandbox(limits=Limits(memory_mb=512)).run_python("block = bytearray(1 << 30)\nresult = len(block)")
    assert caught.value.code is Code.RESOURCE_EXHAUSTED
    assert "RLIMIT_DATA" in caught.value.message


def test_cpu_limit_is_resource_exhausted():
    with pytest.raises(ExportError) as caught:
        Sandbox(limits=Limits(cpu_seconds=1)).run_python("while True:\n    pass")
    assert caught.value.code is Code.RESOURCE_EXHAUSTED
    assert "CPU-time limit (1 s, RLIMIT_CPU; EXPORTER_SANDBOX_CPU_SECONDS raises it)" in caught.value.message


def test_wall_clock_limit_is_deadline_exceeded():
    with pytest.raises(ExportError) as caught:
        Sandbox(limits=Limits(wall_seconds=2)).run_python("import time\ntime.sleep(60)")
    assert caught.value.code is Code.DEADLINE_EXCEEDED


def test_child_export_error_comes_back_unchanged():
    code = (
        "from exporter.core.errors import Code, ExportError, FieldViolation\n"
        "raise ExportError(Code.INVALID_ARGUMENT, 'params.quantization: no', [FieldViolation('params', 'no')])"
    )
    with pytest.raises(ExportError) as caught:
        Sandbox().run_python(code)
    assert caught.value == ExportError(
        Code.INVALID_ARGUMENT, "params.quantization: no", [FieldViolation("params", "no")]
    )


def test_crash_is_internal_with_the_last_output():
    code = "import os, sys\nprint('the last words of the child', file=sys.stderr, flush=True)\nos.abort()"
    with pytest.raises(ExportError) as caught:
        Sandbox().run_python(code)
    assert caught.value.code is Code.INTERNAL
    assert "SIGABRT" in caught.value.message and "the last words of the child" in caught.value.message


def test_a_link_left_in_staging_is_refused(tmp_path, canary_model):
    """A link in the staging folder could make the parent hash or upload a host file."""
    from exporter.sandbox import check_staging

    (tmp_path / "link").symlink_to("/etc/hostname")
    with pytest.raises(ExportError) as caught:
        check_staging(tmp_path)
    assert caught.value.code is Code.FAILED_PRECONDITION and "'link'" in caught.value.message


def test_a_failed_attempts_kept_reports_never_follow_a_link(tmp_path):
    """A failed export keeps the convert step's reports (exporter/failed_export.py); a sandboxed
    child could leave a link by that name to a host JSON file (a credential): it is not read."""
    from exporter.failed_export import convert_reports

    staging, secret = tmp_path / "staging", tmp_path / "service-account.json"
    staging.mkdir()
    secret.write_text('{"private_key": "host secret"}')
    (staging / "edgetpu_compatibility.json").symlink_to(secret)
    os.mkfifo(staging / "other.json")  # a fifo would block a plain open
    assert convert_reports(staging, ("edgetpu_compatibility.json", "other.json")) == {}
    (staging / "edgetpu_compatibility.json").unlink()
    (staging / "edgetpu_compatibility.json").write_text('{"mappedToEdgeTpu": 3}')
    assert convert_reports(staging, ("edgetpu_compatibility.json",)) == {
        "edgetpu_compatibility.json": {"mappedToEdgeTpu": 3}
    }


TFLITE_UINT8 = {"modelFormat": "tflite", "params": {"quantization": "uint8"}}


def test_sandboxed_export_equals_in_process(canary_model, tmp_path):
    stages = []
    sandboxed = export_model(
        canary_model,
        {**TFLITE_UINT8, "gcsDestination": {"outputUriPrefix": str(tmp_path / "sandboxed")}},
        sandbox=Sandbox(),
        progress=lambda stage, event: stages.append((stage, event)),
    )
    plain = export_model(canary_model, {**TFLITE_UINT8, "gcsDestination": {"outputUriPrefix": str(tmp_path / "plain")}})
    assert stages == [
        (stage, event) for stage in ("load", "convert", "verify", "publish") for event in ("start", "done")
    ]
    assert sandboxed.report["sandbox"]["mode"] == "bubblewrap"
    assert sandboxed.report["sandbox"]["network"] == "none" and sandboxed.report["sandbox"]["user"] == "nobody"
    assert plain.report["sandbox"] == {"mode": "off"}
    assert sandboxed.report["checks"] == plain.report["checks"]
    assert [a["path"] for a in sandboxed.report["artifacts"]] == [a["path"] for a in plain.report["artifacts"]]
    written = json.loads((Path(sandboxed.output_dir) / "export_report.json").read_text())
    assert written["sandbox"]["mode"] == "bubblewrap"


EDGETPU_STANDIN = Path(__file__).resolve().parent / "fixtures" / "edgetpu_compiler_standin"


@pytest.mark.slow
@pytest.mark.parametrize("model_format", ["tf_js", "core_ml", "tf_saved_model", "edgetpu_tflite", "onnx", "openvino"])
def test_every_format_exports_in_the_sandbox(canary_model, tmp_path, monkeypatch, model_format):
    """Node.js (tf_js verification), the tfjs converter's own process, coremltools, an Edge TPU
    compiler binary (the stand-in, tests/fixtures/README.md), tf2onnx and onnxruntime, OpenVINO
    and NNCF all run under the namespaces and the system call filter; the report is the one an
    unsandboxed export writes."""
    monkeypatch.setenv("EXPORTER_EDGETPU_COMPILER", str(EDGETPU_STANDIN))
    config = {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(tmp_path / "sandboxed")}}
    sandboxed = export_model(canary_model, config, sandbox=Sandbox())
    assert sandboxed.report["sandbox"]["mode"] == "bubblewrap"
    assert sandboxed.report["sandbox"]["systemCalls"].startswith("seccomp")
    plain = export_model(canary_model, {**config, "gcsDestination": {"outputUriPrefix": str(tmp_path / "plain")}})
    assert [a["path"] for a in sandboxed.report["artifacts"]] == [a["path"] for a in plain.report["artifacts"]]
    assert sandboxed.report["checks"].keys() == plain.report["checks"].keys()
    for name, check in sandboxed.report["checks"].items():
        if "passed" in check:
            assert check["passed"] == plain.report["checks"][name]["passed"] is True, (name, check)
    if model_format == "tf_js":  # verified by Node.js inside the sandbox
        assert sandboxed.report["checks"]["backends"]["wasm"]["runs"] is True
    if model_format == "edgetpu_tflite":
        assert (Path(sandboxed.output_dir) / "edgetpu_model.tflite").is_file()


def test_edgetpu_in_the_sandbox_needs_a_compiler_binary(canary_model, tmp_path, monkeypatch):
    """The compiler's container image needs the Docker engine, which the sandbox does not reach."""
    monkeypatch.delenv("EXPORTER_EDGETPU_COMPILER", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no edgetpu_compiler on it
    config = {"modelFormat": "edgetpu_tflite", "gcsDestination": {"outputUriPrefix": str(tmp_path)}}
    with pytest.raises(ExportError) as caught:
        export_model(canary_model, config, sandbox=Sandbox())
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert "inside the export sandbox" in caught.value.message and "EXPORTER_EDGETPU_COMPILER" in caught.value.message
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".failed")]  # nothing published


def test_sandboxed_export_cancels_between_stages(canary_model, tmp_path):
    def progress(stage, event):
        if (stage, event) == ("convert", "done"):
            raise ExportError(Code.CANCELLED, "the operation was cancelled")

    with pytest.raises(ExportError) as caught:
        export_model(
            canary_model,
            {**TFLITE_UINT8, "gcsDestination": {"outputUriPrefix": str(tmp_path)}},
            sandbox=Sandbox(),
            progress=progress,
        )
    assert caught.value.code is Code.CANCELLED
    assert list(tmp_path.iterdir()) == []  # nothing published, the staging folder removed


def test_sandboxed_export_over_its_memory_limit(canary_model, tmp_path):
    """TensorFlow at its data limit may crash or spin: either way RESOURCE_EXHAUSTED, in seconds."""
    with pytest.raises(ExportError) as caught:
        export_model(
            canary_model,
            {**TFLITE_UINT8, "gcsDestination": {"outputUriPrefix": str(tmp_path)}},
            sandbox=Sandbox(limits=Limits(memory_mb=600, wall_seconds=120)),
        )
    assert caught.value.code is Code.RESOURCE_EXHAUSTED, caught.value
    assert "600 MiB, RLIMIT_DATA" in caught.value.message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_sandbox_flag(canary_model, tmp_path):
    """--sandbox runs in bubblewrap sized by the EXPORTER_SANDBOX_* settings the docs list, as
    the service is; a setting that is not a number is refused before anything runs."""
    exporter = Path(sys.executable).parent / "exporter"
    command = [str(exporter), "export", "--model", str(canary_model), "--sandbox", "--json", "--output"]
    settings = {"EXPORTER_SANDBOX_CPU_SECONDS": "700", "EXPORTER_SANDBOX_MEMORY_MB": "3000"}
    done = subprocess.run(
        [*command, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **settings, "EXPORTER_SANDBOX_WALL_SECONDS": "600"},
    )
    assert done.returncode == 0, done.stderr
    sandbox = json.loads(done.stdout)["report"]["sandbox"]
    assert sandbox["mode"] == "bubblewrap"
    assert sandbox["limits"] == {"cpuSeconds": 700, "dataMemoryMb": 3000, "fileSizeMb": 4096, "wallSeconds": 600}

    refused = subprocess.run(
        [*command, str(tmp_path / "refused")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EXPORTER_SANDBOX_MEMORY_MB": "lots"},
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == (
        "exporter: INVALID_ARGUMENT: EXPORTER_SANDBOX_MEMORY_MB='lots': expected a whole number of at least 64"
    )
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_service_exports_in_the_sandbox(tmp_path, canary_model):
    from conftest import CACHE

    outputs = tmp_path / "exports"
    outputs.mkdir()
    server = Server(tmp_path / "data", import_roots=[CACHE], output_roots=[outputs], EXPORTER_WORKERS="1")
    (tmp_path / "data").mkdir()
    server.start()
    try:
        health = server.health()
        assert health["sandbox"]["mode"] == "bubblewrap" and health["sandbox"]["setting"] == "required"
        assert health["sandbox"]["network"] == "none" and health["sandbox"]["limits"]["dataMemoryMb"] == 4096
        imported = server.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "c"})
        assert imported.status_code == 200, imported.text
        body = {"outputConfig": {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(outputs)}}}
        started = server.call("POST", f"{PARENT}/models/c:export", json=body).json()
        finished = server.wait(started["name"])
        assert "response" in finished, finished
        report = server.call("GET", f"{started['name']}:exportReport").json()
        assert report["sandbox"]["mode"] == "bubblewrap"
    finally:
        server.stop()


@pytest.mark.slow
def test_service_refuses_exports_when_the_sandbox_cannot_start(tmp_path, canary_model):
    from conftest import CACHE

    outputs = tmp_path / "exports"
    outputs.mkdir()
    (tmp_path / "data").mkdir()
    missing = str(tmp_path / "no-such-bwrap")
    server = Server(
        tmp_path / "data",
        import_roots=[CACHE],
        output_roots=[outputs],
        EXPORTER_WORKERS="1",
        EXPORTER_SANDBOX_BWRAP=missing,
    )
    server.start()
    try:
        health = server.health()["sandbox"]
        assert health["mode"] == "off" and health["exportsRefused"] is True and missing in health["reason"]
        imported = server.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "c"})
        assert imported.status_code == 200, imported.text
        body = {"outputConfig": {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(outputs)}}}
        started = server.call("POST", f"{PARENT}/models/c:export", json=body).json()
        finished = server.wait(started["name"])
        assert finished["error"]["code"] == int(Code.FAILED_PRECONDITION), finished
        assert "EXPORTER_SANDBOX=required" in finished["error"]["message"]
        assert missing in finished["error"]["message"]
        assert list(outputs.iterdir()) == []
    finally:
        server.stop()


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        try:
            children = [
                int(c) for c in Path(f"/proc/{pending.pop()}/task").glob("*/children") for c in c.read_text().split()
            ]
        except OSError:
            continue
        found += children
        pending += children
    return found


def test_a_parent_killed_with_sigkill_takes_its_sandbox_down():
    """A worker killed with SIGKILL must not leave its sandboxed export running."""
    import os
    import signal
    import time

    code = "from exporter.sandbox import Sandbox\nSandbox().run_python('import time\\ntime.sleep(300)')"
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while len(_descendants(parent.pid)) < 3 and time.monotonic() < deadline:  # bwrap, bwrap, launcher
        time.sleep(0.1)
    sandboxed = _descendants(parent.pid)
    assert len(sandboxed) >= 3, sandboxed
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in sandboxed) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [
        pid for pid in sandboxed if Path(f"/proc/{pid}/cmdline").exists() and Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert alive == []
