"""The sandbox: an export's convert and verify steps in a confined child process.

A SavedModel is a program. With a ``Sandbox`` the parent (CLI or worker) reads the model folder,
stages and publishes; a child process started through bubblewrap (``bwrap``) imports TensorFlow,
converts into the staging folder and verifies there, and sends back one JSON line per step over
a pipe. The child runs with:

- new user, network, mount, pid, ipc, uts and cgroup namespaces: no network but its own loopback,
  uid/gid 65534 (nobody) with no capabilities;
- a filesystem of read-only binds only: the model folder (and its image folders), the Python
  installation and the virtual environment, the engine's own packages, ``/usr`` (and Node.js'
  ``node_modules`` for tf_js); the staging folder is the one writable bind, ``/tmp`` a private
  tmpfs;
- resource limits set by the launcher before anything else runs (``setrlimit``): CPU seconds
  (``RLIMIT_CPU``), data memory (``RLIMIT_DATA``, not ``RLIMIT_AS``: TensorFlow reserves far more
  address space than it uses), file size (``RLIMIT_FSIZE``), no core files; and a wall-clock
  deadline kept by the parent;
- a seccomp filter (``exporter/syscall_filter.py``) that refuses the system calls a converter
  never makes: new namespaces, mounting, tracing, BPF, perf, io_uring, keyrings, kernel modules.

``isolation="limits-only"`` runs the same launcher without bubblewrap (the limits only), for
hosts where namespaces cannot be made. The child's ExportError comes back unchanged; a child
killed by a limit is RESOURCE_EXHAUSTED naming the limit, any other death INTERNAL with its last
lines of output. Nothing the child sends is unpickled: the parent reads JSON only.

The launcher is this module: ``python -m exporter.sandbox FD`` reads its job (pickled by the
parent) on stdin and writes its answers on file descriptor FD.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from containers.edgetpu_compiler import COMPILER_SETTING, SANDBOXED_SETTING
from exporter.core.errors import Code, ExportError, FieldViolation, os_error

NOBODY = 65534
BUBBLEWRAP = "bubblewrap"
LIMITS_ONLY = "limits-only"
STAGING_INSIDE = "/staging"  # where bubblewrap binds a staging folder held open by the parent
MAX_ANSWER_BYTES = 16 << 20  # what the parent reads from the child at most
STDERR_TAIL_LINES = 20
MEMORY_STALL_SECONDS = 15
SYSTEM_CALLS = "seccomp deny-list (exporter/syscall_filter.py)"
# Environment variables the child keeps (nothing else: no credentials, no database URL).
ENV_KEEP = (
    "PATH",
    "LANG",
    "LC_ALL",
    "PYTHONHASHSEED",
    "EXPORTER_NODE_MODULES",
    "EXPORTER_EDGETPU_COMPILER",
    # The bounds on what a model may cost, which the child applies again when it reads the model.
    "EXPORTER_MAX_IMAGE_PIXELS",
    "EXPORTER_MAX_GRAPH_BYTES",
    "EXPORTER_MAX_CONST_EXPANSION_BYTES",
)
ENV_KEEP_PREFIXES = ("TF_", "TFDF_", "OMP_", "KMP_", "GRPC_")


@dataclass(frozen=True)
class Limits:
    """The child's resource limits. Measured on the sample models (docs/security.md, "Sandbox"):
    a digits MobileNetV2 uint8 export peaks at about 1.6 GiB of data memory, the canary at 0.9."""

    cpu_seconds: int = 900
    memory_mb: int = 4096  # RLIMIT_DATA
    file_mb: int = 4096  # RLIMIT_FSIZE: the largest file the child may write
    wall_seconds: float = 1800.0

    def as_dict(self) -> dict:
        return {
            "cpuSeconds": self.cpu_seconds,
            "dataMemoryMb": self.memory_mb,
            "fileSizeMb": self.file_mb,
            "wallSeconds": self.wall_seconds,
        }


# The settings that size the sandbox, with the least value each takes: the service reads them
# through its settings, the CLI's --sandbox and the Python API's sandbox=True from the environment.
LIMIT_SETTINGS = {
    "EXPORTER_SANDBOX_CPU_SECONDS": ("cpu_seconds", 1),
    "EXPORTER_SANDBOX_MEMORY_MB": ("memory_mb", 64),
    "EXPORTER_SANDBOX_WALL_SECONDS": ("wall_seconds", 1),
}
BWRAP_SETTING = "EXPORTER_SANDBOX_BWRAP"


def limits_from_environment() -> Limits:
    """The Limits the EXPORTER_SANDBOX_* settings give (the defaults where unset); a value that is
    not a whole number at or above its least is INVALID_ARGUMENT naming the setting."""
    chosen: dict[str, int] = {}
    for setting, (name, least) in LIMIT_SETTINGS.items():
        raw = os.environ.get(setting, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or int(raw) < least:
            raise ExportError(Code.INVALID_ARGUMENT, f"{setting}={raw!r}: expected a whole number of at least {least}")
        chosen[name] = int(raw)
    return Limits(**chosen)


def _project_packages() -> list[Path]:
    import containers
    import converters
    import exporter

    return [Path(package.__file__).resolve().parent for package in (exporter, converters, containers)]


def _library_paths() -> list[Path]:
    """What the child reads besides the model: Python, the venv, the engine's code, node_modules."""
    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.executable).resolve().parent]
    paths += _project_packages()
    node_modules = os.environ.get("EXPORTER_NODE_MODULES")
    paths.append(Path(node_modules) if node_modules else _project_packages()[0].parent / "node_modules")
    compiler = os.environ.get(COMPILER_SETTING)
    if compiler:  # an Edge TPU compiler installed outside /usr: its folder (it may read files beside it)
        paths.append(Path(os.path.realpath(compiler)).parent)
    return paths


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths (made absolute and real), leaving out any that lies inside another."""
    real = sorted({Path(os.path.realpath(p)) for p in paths if p})
    kept: list[Path] = []
    for path in real:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


@dataclass
class Sandbox:
    """Where an export's convert and verify steps run: passed to ``export_model``."""

    isolation: str = BUBBLEWRAP  # or LIMITS_ONLY
    bwrap: str = "bwrap"
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.isolation not in (BUBBLEWRAP, LIMITS_ONLY):
            raise ValueError(f"unknown isolation {self.isolation!r}")

    @classmethod
    def from_environment(cls, isolation: str = BUBBLEWRAP) -> Sandbox:
        """The sandbox sized by the EXPORTER_SANDBOX_* settings, as the service sizes it."""
        return cls(
            isolation=isolation, bwrap=os.environ.get(BWRAP_SETTING) or "bwrap", limits=limits_from_environment()
        )

    # -- what it is ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """The protection, as /healthz and export_report.json record it."""
        if self.isolation == LIMITS_ONLY:
            return {
                "mode": LIMITS_ONLY,
                "network": "host",
                "user": "the service's own",
                "systemCalls": SYSTEM_CALLS,
                "limits": self.limits.as_dict(),
            }
        return {
            "mode": BUBBLEWRAP,
            "network": "none",
            "user": "nobody",
            "filesystem": "read-only binds; writable staging folder and private /tmp",
            "systemCalls": SYSTEM_CALLS,
            "limits": self.limits.as_dict(),
        }

    def unavailable(self) -> str | None:
        """Why this sandbox cannot start here, or None when it can (bubblewrap is tried for real)."""
        if self.isolation == LIMITS_ONLY:
            return None
        binary = shutil.which(self.bwrap)
        if binary is None:
            return f"bubblewrap ({self.bwrap!r}) is not installed"
        try:
            done = subprocess.run(
                [binary, *self._namespace_args(), "--ro-bind", "/usr", "/usr", *self._root_links(), "true"],
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{self.bwrap} cannot run: {error}"
        if done.returncode != 0:
            text = " ".join(done.stderr.decode(errors="replace").split())[:300]
            return f"{self.bwrap} cannot make its namespaces here (exit status {done.returncode}: {text})"
        return None

    def check(self) -> None:
        """FAILED_PRECONDITION when the sandbox cannot start."""
        reason = self.unavailable()
        if reason:
            raise ExportError(Code.FAILED_PRECONDITION, f"the sandbox cannot start: {reason}")

    # -- the child's command line -------------------------------------------------------------
    @staticmethod
    def _namespace_args() -> list[str]:
        return [
            "--unshare-all",  # user, network, mount, pid, ipc, uts, cgroup
            "--unshare-user",
            "--uid",
            str(NOBODY),
            "--gid",
            str(NOBODY),
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
        ]

    @staticmethod
    def _root_links() -> list[str]:
        """/bin, /lib, ... as on the host: symlinks into /usr (merged /usr) or read-only binds."""
        args: list[str] = []
        for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(name):
                args += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                args += ["--ro-bind", name, name]
        return args

    def _bwrap_args(self, read_only: list[Path], writable: list[Path], bound: dict[int, str]) -> list[str]:
        args = [shutil.which(self.bwrap) or self.bwrap, *self._namespace_args()]
        args += ["--ro-bind", "/usr", "/usr", *self._root_links()]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group"):
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
        writable = _outermost(writable)
        for path in _outermost(read_only + _library_paths()):
            if not any(path.is_relative_to(w) for w in writable):
                args += ["--ro-bind-try", str(path), str(path)]
        for path in writable:
            args += ["--bind", str(path), str(path)]
        for fd, inside in bound.items():  # a folder held open by the parent, bound by its descriptor
            args += ["--bind-fd", str(fd), inside]
        return args + ["--chdir", "/tmp"]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
        if self.isolation == BUBBLEWRAP:
            env.update(HOME="/tmp", TMPDIR="/tmp")
        env[SANDBOXED_SETTING] = self.isolation  # what the code inside may not reach (the Docker engine)
        return env

    # -- running a job ------------------------------------------------------------------------
    @contextmanager
    def start(
        self, job: dict, read_only: list[Path], writable: list[Path], bound: dict[int, str] | None = None
    ) -> Iterator[Child]:
        """Start the launcher on `job`; the child is killed when the block ends. `bound` maps the
        descriptors of folders this process holds open to where bubblewrap binds them, writable."""
        bound = bound or {}
        control = Path(tempfile.mkdtemp(prefix="exporter-sandbox-"))
        child = None
        try:
            job_file = control / "job.pickle"
            job_file.write_bytes(pickle.dumps({**job, "limits": asdict(self.limits)}))
            reader, writer = os.pipe()
            launcher = [sys.executable, "-I", "-m", "exporter.sandbox", str(writer)]
            command = (
                launcher if self.isolation == LIMITS_ONLY else self._bwrap_args(read_only, writable, bound) + launcher
            )
            with job_file.open("rb") as stdin, (control / "output.log").open("wb") as output:
                try:
                    process = subprocess.Popen(
                        command,
                        stdin=stdin,
                        stdout=output,
                        stderr=output,
                        pass_fds=(writer, *bound),
                        env=self._environment(),
                        cwd="/tmp" if self.isolation == LIMITS_ONLY else None,
                        start_new_session=True,
                    )
                except OSError as error:
                    os.close(reader)
                    raise ExportError(Code.FAILED_PRECONDITION, f"the sandbox cannot start: {error}") from None
                finally:
                    os.close(writer)
            child = Child(process, reader, control / "output.log", self.limits)
            child.isolation_direct = self.isolation == LIMITS_ONLY
            yield child
        finally:
            if child is not None:
                child.close()
            shutil.rmtree(control, ignore_errors=True)

    def run_python(self, code: str, *, writable: list[Path] = (), read_only: list[Path] = ()) -> Any:
        """Run Python source in the sandbox; returns the JSON value it leaves in ``result``."""
        with self.start({"kind": "python", "code": code}, list(read_only), list(writable)) as child:
            return child.answer("done")["result"]

    @contextmanager
    def steps(self, converter, source, staging: Path, params: dict[str, str]) -> Iterator[ChildSteps]:
        read_only = [source.root, source.saved_model_dir, source.calibration_dir, source.heldout_dir]
        held = _held_descriptor(staging)
        if held is not None and self.isolation == BUBBLEWRAP:
            # A staging folder held open by this process (a local destination's): bound by its
            # descriptor, so no path to it is resolved again; inside, it has a name of its own.
            inside, writable, bound = STAGING_INSIDE, [], {held: STAGING_INSIDE}
        else:
            inside, writable, bound = str(staging), [staging], {}
        job = {"kind": "export", "format": converter.name, "source": source, "staging": inside, "params": params}
        with self.start(job, read_only, writable, bound) as child:
            yield ChildSteps(child, staging)


def _held_descriptor(path: Path) -> int | None:
    """The descriptor `path` reaches the folder through, when it is this process's
    ``/proc/<pid>/fd/<n>`` (see ``exporter.destinations.local.held_path``)."""
    match = re.fullmatch(rf"/proc/{os.getpid()}/fd/(\d+)", str(path))
    return int(match[1]) if match else None


class Child:
    """The parent's end of one running launcher: its answers, its death, its limits."""

    def __init__(self, process: subprocess.Popen, reader: int, output: Path, limits: Limits):
        self.process, self.reader, self.output, self.limits = process, reader, output, limits
        self.deadline = time.monotonic() + limits.wall_seconds
        self.buffer = b""
        self.received = 0
        self.status: int | None = None
        self.data_mb = 0  # the child's data memory and CPU seconds as it last reported them
        self.reported_cpu = 0.0
        self.killed = False  # by the parent (deadline, cancellation)
        self.at_limit_since: float | None = None
        self.launcher_pid: int | None = None
        self.isolation_direct = False  # the launcher is the process itself (limits only)

    def _read_line(self) -> bytes | None:
        """The next line the child sends; None when it closed its end (it exited)."""
        while b"\n" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise ExportError(
                    Code.DEADLINE_EXCEEDED,
                    f"the sandboxed export ran past its wall-clock limit of {self.limits.wall_seconds:g} s "
                    "(EXPORTER_SANDBOX_WALL_SECONDS raises it)",
                )
            ready, _, _ = select.select([self.reader], [], [], min(left, 1.0))
            self._sample()
            if not ready:
                continue
            chunk = os.read(self.reader, 1 << 16)
            if not chunk:
                return None
            self.received += len(chunk)
            if self.received > MAX_ANSWER_BYTES:
                self.kill()
                raise ExportError(Code.INTERNAL, "the sandboxed export sent more than the parent reads")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def answer(self, expected: str) -> dict:
        """The child's next message, which must be `expected`; its error raised as an ExportError."""
        while True:
            line = self._read_line()
            if line is None:
                raise self.death()
            try:
                message = json.loads(line)
                event = message["event"]
                if event == "usage":
                    self.data_mb, self.reported_cpu = int(message["dataMb"]), float(message["cpuSeconds"])
                    self._watch_memory()
                    continue
            except (ValueError, KeyError, TypeError):
                self.kill()
                raise ExportError(Code.INTERNAL, "the sandboxed export sent an unreadable answer") from None
            break
        if event == "error":
            raise child_error(message)
        if event != expected:
            self.kill()
            raise ExportError(Code.INTERNAL, f"the sandboxed export answered {event!r}, expected {expected!r}")
        return message

    def _launcher(self) -> int | None:
        """The launcher's pid on this host (bubblewrap's grandchild), found by walking the tree."""
        if self.launcher_pid is None:
            pending = [self.process.pid]
            while pending:
                pid = pending.pop()
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if b"exporter.sandbox" in argv and not argv[0].endswith(b"bwrap"):
                        self.launcher_pid = pid
                        break
                    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                except OSError:
                    continue
                pending += [int(child) for child in children]
        return self.launcher_pid

    def _sample(self) -> None:
        """The child's data memory as the host sees it (a thread of the child cannot report while
        native code holds the interpreter), watched against the limit."""
        pid = self.process.pid if self.isolation_direct else self._launcher()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmData:"):
                    self.data_mb = int(line.split()[1]) // 1024
        except (OSError, ValueError):
            return
        self._watch_memory()

    def _watch_memory(self) -> None:
        """A child held at its data limit for MEMORY_STALL_SECONDS is stuck (TensorFlow may spin on
        an allocation that keeps failing until the CPU limit): killed, RESOURCE_EXHAUSTED."""
        if self.data_mb < 0.95 * self.limits.memory_mb:
            self.at_limit_since = None
        elif self.at_limit_since is None:
            self.at_limit_since = time.monotonic()
        elif time.monotonic() - self.at_limit_since > MEMORY_STALL_SECONDS:
            self.kill()
            raise ExportError(
                Code.RESOURCE_EXHAUSTED,
                f"the sandboxed export ran out of its memory limit ({self.limits.memory_mb} MiB, RLIMIT_DATA; "
                f"held at {self.data_mb} MiB for {MEMORY_STALL_SECONDS} s)",
            )

    def wait(self, timeout: float | None = None) -> int:
        """The child's exit status; past `timeout` (default: its deadline) it is killed first."""
        until = self.deadline if timeout is None else min(self.deadline, time.monotonic() + timeout)
        while self.status is None:
            pid, status = os.waitpid(self.process.pid, os.WNOHANG)
            if pid:
                self.process.returncode = self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() >= until:
                self.killed = True
                os.killpg(self.process.pid, signal.SIGKILL)
                until = float("inf")
            else:
                time.sleep(0.02)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            self.killed = True
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(timeout=float("inf"))

    def close(self) -> None:
        self.kill()
        os.close(self.reader)

    def tail(self) -> str:
        try:
            with self.output.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 16384))
                lines = handle.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        lines = [line for line in lines if not re.match(r"[IW]\d{4} |WARNING: All log messages", line)]
        return "\n".join(lines[-STDERR_TAIL_LINES:])

    def death(self) -> ExportError:
        """What ended a child that stopped without an answer."""
        status = self.wait()
        # bwrap reports a child killed by signal N as 128 + N; without bwrap, Popen says -N.
        signum = -status if status < 0 else status - 128 if status > 128 else None
        tail = self.tail()
        # A failed allocation in native code often ends in SIGSEGV or SIGABRT, or in spinning until the
        # CPU limit, rather than in an error: counted as the memory limit when the child's last reported
        # use was near it.
        near_limit = self.data_mb >= 0.75 * self.limits.memory_mb
        if near_limit or any(mark in tail for mark in ("bad_alloc", "MemoryError", "Cannot allocate memory")):
            return ExportError(
                Code.RESOURCE_EXHAUSTED,
                f"the sandboxed export ran out of its memory limit ({self.limits.memory_mb} MiB, RLIMIT_DATA; "
                f"last measured use {self.data_mb} MiB; EXPORTER_SANDBOX_MEMORY_MB raises it)",
            )
        near_cpu = self.reported_cpu >= self.limits.cpu_seconds - 2
        if signum == signal.SIGXCPU or (signum == signal.SIGKILL and not self.killed and near_cpu):
            return ExportError(
                Code.RESOURCE_EXHAUSTED,
                f"the sandboxed export used its CPU-time limit ({self.limits.cpu_seconds} s, RLIMIT_CPU; "
                "EXPORTER_SANDBOX_CPU_SECONDS raises it)",
            )
        if signum == signal.SIGXFSZ:
            return ExportError(
                Code.RESOURCE_EXHAUSTED,
                f"the sandboxed export wrote a file past its size limit ({self.limits.file_mb} MiB, RLIMIT_FSIZE)",
            )
        try:
            how = f"killed by {signal.Signals(signum).name}"
        except ValueError:
            how = f"exit status {status}"
        return ExportError(
            Code.INTERNAL,
            f"the sandboxed export ended ({how}) without an answer (data memory at its last report: "
            f"{self.data_mb} of {self.limits.memory_mb} MiB); its last output:\n{tail}",
        )


def child_error(message: dict) -> ExportError:
    """The child's ExportError, rebuilt from JSON and checked (the child is not trusted)."""
    try:
        code = Code[message["code"]]
        text = str(message["message"])[:20000]
        violations = [FieldViolation(str(v["field"]), str(v["description"])) for v in message.get("violations", [])]
    except (KeyError, TypeError, ValueError):
        return ExportError(Code.INTERNAL, "the sandboxed export sent an unreadable error")
    error = ExportError(code, text, violations)
    if isinstance(message.get("check"), dict):  # kept as data only: reported, never acted on
        from converters.verification import CheckReport

        error.check = CheckReport(message["check"])
    return error


class ChildSteps:
    """convert() and verify() of an export whose child runs them: each waits for its answer."""

    def __init__(self, child: Child, staging: Path):
        self.child, self.staging = child, staging

    def convert(self) -> None:
        self.child.answer("converted")

    def verify(self) -> dict:
        from converters.verification import CheckReport

        checks = self.child.answer("verified")["checks"]
        if not isinstance(checks, dict) or not all(isinstance(v, dict) for v in checks.values()):
            raise ExportError(Code.INTERNAL, "the sandboxed export sent unreadable checks")
        self.child.wait(timeout=10)  # it exits after its last answer; then nothing more can change
        check_staging(self.staging)
        return {str(name): CheckReport(values) for name, values in checks.items()}


def check_staging(staging: Path) -> None:
    """Only folders and regular files may come out of the sandbox: a link could make the parent
    read (hash, upload) a file of the host."""
    for folder, names, files in os.walk(staging):
        for name in names + files:
            mode = os.lstat(os.path.join(folder, name)).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ExportError(
                    Code.FAILED_PRECONDITION,
                    f"the sandboxed conversion left {os.path.relpath(os.path.join(folder, name), staging)!r}, "
                    "which is not a regular file or folder; nothing is published",
                )


class InProcess:
    """convert() and verify() in this process (no sandbox): what ``export_model`` did always."""

    def __init__(self, converter, source, staging: Path, params: dict[str, str]):
        self.converter, self.source, self.staging, self.params = converter, source, staging, params

    def convert(self) -> None:
        self.converter.convert(self.source, self.staging, self.params)

    def verify(self) -> dict:
        from converters.verification import make_reference

        return self.converter.verify(self.source, self.staging, self.params, make_reference(self.source))


@contextmanager
def export_steps(sandbox: Sandbox | None, converter, source, staging: Path, params: dict[str, str]):
    """The convert and verify steps of one export, in the sandbox or (None) in this process."""
    if sandbox is None:
        yield InProcess(converter, source, staging, params)
    else:
        with sandbox.steps(converter, source, staging, params) as steps:
            yield steps


# -- the launcher, in the child -------------------------------------------------------------------


def _set_limits(limits: dict) -> None:
    mib = 1 << 20
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU at the soft limit, SIGKILL after
    resource.setrlimit(resource.RLIMIT_DATA, (limits["memory_mb"] * mib,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mib,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _filter_system_calls() -> None:
    from exporter import syscall_filter

    try:
        syscall_filter.install()
    except Exception as error:  # noqa: BLE001  (no filter: refuse to run the job at all)
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"the sandbox's system call filter cannot load (libseccomp: {type(error).__name__}: {error}); "
            "nothing was run",
        ) from None


def _stage_error(stage: str, converter: str, error: BaseException) -> ExportError:
    """The ExportError the parent's StageClock would make of `error` in-process."""
    if isinstance(error, ExportError):
        return error
    # TensorFlow's own out-of-memory (tf.errors.ResourceExhaustedError, "OOM when allocating"),
    # known by name: this module does not import TensorFlow.
    if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError":
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        return ExportError(
            Code.RESOURCE_EXHAUSTED,
            f"{stage} ran out of the sandbox's memory limit (RLIMIT_DATA; EXPORTER_SANDBOX_MEMORY_MB raises it): {first}",
        )
    if isinstance(error, OSError):
        return os_error(error, f"{stage} failed")
    return ExportError(Code.INTERNAL, f"{stage} of {converter} failed: {type(error).__name__}: {error}")


def _run_export(job: dict, send) -> None:
    from converters.load_scope import shared_loads

    with shared_loads():  # the source is loaded and run on its held-out images once
        _convert_and_verify(job, send)


def _convert_and_verify(job: dict, send) -> None:
    from converters import REGISTRY
    from converters.verification import make_reference

    name, source, staging, params = job["format"], job["source"], Path(job["staging"]), job["params"]
    converter = REGISTRY[name]
    stage = "convert"
    try:
        converter.prepare()
        converter.convert(source, staging, params)
        send({"event": "converted"})
        stage = "verify"
        checks = converter.verify(source, staging, params, make_reference(source))
        send({"event": "verified", "checks": {key: check.as_dict() for key, check in checks.items()}})
    except BaseException as error:  # noqa: B036  (everything goes back to the parent as one error)
        raise _stage_error(stage, name, error) from error


def _data_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) // 1024
    return 0


def _report_usage(send) -> None:
    """Tell the parent the data memory in use, ten times a second while it changes: a native crash
    on a failed allocation says nothing itself."""
    last_used, last_cpu = -1, -1.0
    while True:
        used, cpu = _data_mb(), time.process_time()
        if abs(used - last_used) >= 4 or cpu - last_cpu >= 0.5:
            send({"event": "usage", "dataMb": used, "cpuSeconds": round(cpu, 2)})
            last_used, last_cpu = used, cpu
        time.sleep(0.1)


def child_main(fd: int) -> int:
    import faulthandler
    import threading

    faulthandler.enable(all_threads=False)  # a native crash leaves its Python stack in the output the parent quotes
    answers = os.fdopen(fd, "w")
    lock = threading.Lock()

    def send(message: dict) -> None:
        with lock:
            answers.write(json.dumps(message, default=str) + "\n")
            answers.flush()

    try:
        job = pickle.load(sys.stdin.buffer)
        _set_limits(job["limits"])
        _filter_system_calls()
        threading.Thread(target=_report_usage, args=(send,), daemon=True).start()
        if job["kind"] == "python":
            scope: dict = {}
            exec(compile(job["code"], "<sandboxed>", "exec"), scope)
            send({"event": "done", "result": scope.get("result")})
        else:
            _run_export(job, send)
    except ExportError as error:
        violations = [{"field": v.field, "description": v.description} for v in error.violations]
        check = getattr(error, "check", None)  # a verification's numbers, for the failed attempt's report
        send(
            {
                "event": "error",
                "code": error.code.name,
                "message": error.message,
                "violations": violations,
                **({"check": check.as_dict()} if check is not None else {}),
            }
        )
    except MemoryError:
        send(
            {
                "event": "error",
                "code": "RESOURCE_EXHAUSTED",
                "message": "ran out of the sandbox's memory limit (RLIMIT_DATA)",
            }
        )
    except BaseException as error:  # noqa: B036
        send({"event": "error", "code": "INTERNAL", "message": f"{type(error).__name__}: {error}"})
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(child_main(int(sys.argv[1])))
