"""Real pieces of a fleet for the fault tests: a Redis of its own on a loopback port, a throw-away
PostgreSQL database, `exporter worker` processes (Celery), and helpers that read the store."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import redis

from conftest import EXPORTER
from service_harness import free_port

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


def create_database() -> str:
    name = f"exporter_fleet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class CeleryWorker:
    """One `exporter worker` process, as an operator starts it."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path):
        self.name, self.env, self.log_path = name, env, log_dir / f"worker-{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> CeleryWorker:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(EXPORTER), "worker", "--queues", "exports", "--name", self.name],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while b" ready." not in self.log_path.read_bytes():
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
