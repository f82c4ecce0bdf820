"""Real pieces of a fleet for the fault tests: a Redis of its own on a loopback port, a RabbitMQ
virtual host of its own (or a RabbitMQ node of its own, for broker settings), a throw-away
PostgreSQL database, `exporter worker` processes (Celery), a memory cgroup that the kernel
enforces, a supervisor that restarts a dead worker, and helpers that read the store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg
import redis

from conftest import CACHE, EXPORTER
from service_harness import PARENT, Server, free_port

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class RedisServer:
    """A redis-server of the test's own (never the machine's shared one), restartable."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)


class RabbitVhost:
    """A virtual host of the test's own on the machine's RabbitMQ (127.0.0.1:5672, guest/guest):
    its queues are shared with no other run. `delete()` removes it with its queues."""

    def __init__(self):
        self.name = f"exporter-test-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{self.name}"

    def create(self) -> RabbitVhost:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def queues(self) -> dict[str, tuple[int, int]]:
        """Each queue's (ready, unacknowledged) message counts."""
        listed = rabbitmqctl(
            "list_queues",
            "-p",
            self.name,
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        )
        return {
            name: (int(ready), int(unacked)) for name, ready, unacked in (line.split() for line in listed.splitlines())
        }

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


def rabbitmqctl(*args: str) -> str:
    found = shutil.which("rabbitmqctl")
    assert found, "rabbitmqctl not found: the RabbitMQ tests need a RabbitMQ server on this machine"
    done = subprocess.run([found, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}"
    return done.stdout


class RabbitNode:
    """A RabbitMQ node of the test's own (its own ports, data, logs and Erlang cookie), for broker
    settings that RabbitMQ takes only from its configuration file: `settings` are lines of
    rabbitmq.conf, `advanced` Erlang terms for the rabbit application (advanced.config)."""

    def __init__(self, folder: Path, settings: dict[str, str], advanced: dict[str, str] | None = None):
        self.folder, self.port, self.dist_port = folder, free_port(), free_port()
        self.node = f"exporter-test-{uuid.uuid4().hex[:8]}@localhost"
        (folder / "rabbitmq.conf").write_text(
            "".join(
                f"{key} = {value}\n"
                for key, value in {"listeners.tcp.default": f"127.0.0.1:{self.port}", **settings}.items()
            )
        )
        terms = ", ".join(f"{{{key}, {value}}}" for key, value in (advanced or {}).items())
        (folder / "advanced.config").write_text(f"[{{rabbit, [{terms}]}}].\n")
        (folder / "enabled_plugins").write_text("[].\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def log_path(self) -> Path:
        return self.folder / "log" / f"{self.node}.log"

    def start(self) -> RabbitNode:
        # The package's own start script; /usr/sbin's wrapper would run it as the rabbitmq user,
        # who cannot write into the test's folder.
        server = shutil.which("rabbitmq-server", path=f"/usr/lib/rabbitmq/bin:{os.environ['PATH']}")
        assert server, "rabbitmq-server not found: the RabbitMQ tests need a RabbitMQ server on this machine"
        folder = self.folder
        env = {
            **os.environ,
            "HOME": str(folder),  # the node's Erlang cookie
            "RABBITMQ_CONF_ENV_FILE": os.devnull,  # not the machine's node's name and settings
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.out = open(folder / "rabbitmq-server.out", "ab")
        self.process = subprocess.Popen(
            [server], env=env, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while b"Starting broker... completed" not in (folder / "rabbitmq-server.out").read_bytes():
            assert self.process.poll() is None, (folder / "rabbitmq-server.out").read_text()
            assert time.monotonic() < deadline, "the test's RabbitMQ node did not start in 120 s"
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the node stops cleanly on SIGTERM
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.out.close()


def create_database() -> str:
    name = f"exporter_fleet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class CeleryWorker:
    """One `exporter worker` process, as an operator starts it; in `cgroup` from its first
    instruction on when one is given (as a service manager with a memory limit starts it)."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, queues: str = "exports", cgroup: MemoryCgroup | None = None
    ):
        self.name, self.env, self.log_path = name, env, log_dir / f"worker-{name}.log"
        self.queues, self.cgroup = queues, cgroup
        self.process: subprocess.Popen | None = None

    def start(self) -> CeleryWorker:
        return self.launch().wait_ready()

    def launch(self) -> CeleryWorker:
        """Start the process without waiting for it (workers load TensorFlow side by side)."""
        # A restarted worker appends to the same log: only a "ready." written after now counts.
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = open(self.log_path, "ab")
        command = [str(EXPORTER), "worker", "--queues", self.queues, "--name", self.name]
        self.process = subprocess.Popen(
            self.cgroup.command(command) if self.cgroup else command,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self) -> CeleryWorker:
        deadline = time.monotonic() + 120
        while b" ready." not in self.log_path.read_bytes()[self.offset :]:
            assert self.process.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, f"worker {self.name} not ready in 120 s"
            time.sleep(0.2)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.kill(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass
        self.log.close()


class Supervisor:
    """Restarts a worker whenever it dies, as systemd's Restart=always or a container runtime
    would; `exits` has the status of each death (-9: killed by SIGKILL, the OOM killer's signal)."""

    def __init__(self, worker: CeleryWorker):
        self.worker, self.exits = worker, []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name=f"supervise-{worker.name}", daemon=True)

    def start(self) -> Supervisor:
        self.worker.start()
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.stopping.wait(0.2):
            status = self.worker.process.poll()
            if status is not None and not self.stopping.is_set():
                self.exits.append(status)
                self.worker.log.close()
                self.worker.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=150)
        self.worker.stop()


class CeleryFleet:
    """`exporter serve` (EXPORTER_RUNNER=celery) on a PostgreSQL database of its own, with
    `exporter worker` processes on the given broker; the canary model imported as "canary".
    `workers` maps a name to the worker to start (a CeleryWorker made elsewhere, in a cgroup say)
    or None for a plain one."""

    def __init__(self, folder: Path, canary_model: Path, broker_url: str, workers=("w1", "w2"), **env: str):
        self.folder = folder
        self.outputs = folder / "exports"
        self.outputs.mkdir(parents=True)
        self.database = create_database()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"
        self.env = {
            **os.environ,
            "EXPORTER_RUNNER": "celery",
            "EXPORTER_BROKER_URL": broker_url,
            "EXPORTER_DATABASE_URL": self.url,
            "EXPORTER_DATA_DIR": str(folder),
            "EXPORTER_IMPORT_ROOTS": json.dumps([str(CACHE)]),
            "EXPORTER_OUTPUT_ROOTS": json.dumps([str(self.outputs)]),
            "EXPORTER_SANDBOX": "off",  # a conversion in the worker process dies with it
            "EXPORTER_LEASE_SECONDS": "6",
            "EXPORTER_LIVENESS_SECONDS": "5",
            "EXPORTER_DRAIN_SECONDS": "1",
            "EXPORTER_MAX_ATTEMPTS": "2",
            **env,
        }
        self.workers: dict[str, CeleryWorker] = {}
        self.server: Server | None = None
        try:
            self.server = Server(folder, [CACHE], [self.outputs], **{**self.env, "EXPORTER_WORKERS": "0"}).start()
            from exporter.service.store import Store

            self.store = Store(self.url)
            for name in workers:
                self.workers[name] = CeleryWorker(name, self.env, folder).launch()
            for worker in self.workers.values():
                worker.wait_ready()
            self.server.import_model(canary_model, "canary")
        except BaseException:
            self.close()
            raise

    def export(self, folder: str, model_format: str = "tflite", model_id: str = "canary", **params) -> str:
        config = {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(self.outputs / folder)}}
        if params:
            config["params"] = params
        response = self.server.call("POST", f"{PARENT}/models/{model_id}:export", json={"outputConfig": config})
        assert response.status_code == 200, response.text
        return response.json()["name"]

    def holder(self, name: str) -> CeleryWorker:
        """The worker running `name`, once its export is past the load stage."""
        row = wait_for(
            lambda: (r := self.store.get_operation(name)) and r.state == "running" and r.progress_percent >= 10 and r,
            300,  # a bound against a hang only: a loaded machine may take minutes to load the model
            "the export to be converting",
            every=0.05,
        )
        pid = int(row.lease_owner.split("/")[2])  # host/celery/PID/random
        return next(w for w in self.workers.values() if w.pid == pid)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        if self.server is not None:
            self.server.stop()
        if hasattr(self, "store"):
            self.store.engine.dispose()
        drop_database(self.database)


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    """Poll `predicate` until it returns something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(every)


def exports_and_staging(folder: Path) -> tuple[list[str], list[str]]:
    """The published export folders and the hidden staging folders left in a destination."""
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return [n for n in names if n.startswith("model-export-")], [n for n in names if n.endswith(".partial")]


class MemoryCgroup:
    """A memory cgroup of the test's own with a hard limit that the kernel enforces: a process in
    it that needs more is killed by the kernel's OOM killer (SIGKILL), with no swap to escape to.

    Made below the test process's own cgroup. cgroup v2 (memory.max) where the memory controller
    is on the unified hierarchy, else cgroup v1's memory controller (memory.limit_in_bytes). Needs
    root; fails naming what is missing where neither can be made."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.version, parent = _memory_cgroup_parent()
        self.path = parent / f"exporter-test-{uuid.uuid4().hex[:8]}"
        try:
            self.path.mkdir()
        except OSError as error:
            raise AssertionError(f"cannot make a memory cgroup under {parent} (root needed): {error}") from None
        if self.version == 2:
            (self.path / "memory.max").write_text(str(limit_bytes))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            if (self.path / "memory.memsw.limit_in_bytes").exists():  # memory plus swap: no swap either
                (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            (self.path / "memory.oom_control").write_text("0")  # the OOM killer on (v1 can pause instead)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this cgroup from its first instruction on."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *argv]

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this cgroup."""
        events = "memory.events" if self.version == 2 else "memory.oom_control"
        for line in (self.path / events).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        raise AssertionError(f"{self.path / events} has no oom_kill count (a kernel older than 4.13?)")

    def remove(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # a process still leaving
                assert time.monotonic() < deadline, f"{self.path} still has processes"
                time.sleep(0.2)


def _memory_cgroup_parent() -> tuple[int, Path]:
    """(cgroup version, folder) under which this process may make a memory cgroup."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    own = dict(
        (controllers, path)
        for _, controllers, path in (line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines())
    )
    for _, point, kind, *_ in mounts:
        controllers = Path(point, "cgroup.controllers")
        if kind == "cgroup2" and controllers.exists() and "memory" in controllers.read_text().split():
            parent = Path(point + own.get("", "/"))
            if parent != Path(point):  # a non-root cgroup lends the controller to children only
                try:
                    (parent / "cgroup.subtree_control").write_text("+memory")
                except OSError as error:
                    raise AssertionError(f"cannot enable the memory controller below {parent}: {error}") from None
            return 2, parent
    for _, point, kind, options, *_ in mounts:
        if kind == "cgroup" and "memory" in options.split(","):
            mine = next((path for names, path in own.items() if "memory" in names.split(",")), "/")
            return 1, Path(point + mine)
    raise AssertionError(
        "no cgroup memory controller mounted (neither cgroup v2 with memory in cgroup.controllers nor "
        "cgroup v1's memory hierarchy): the out-of-memory test needs one"
    )
