"""A real `exporter serve` on loopback, with real worker processes, for the service tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from conftest import EXPORTER

PARENT = "projects/test-project/locations/us-central1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process; `restart()` keeps its store and data."""

    def __init__(self, data_dir: Path, import_roots: list[Path], output_roots: list[Path], **env: str):
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "EXPORTER_DATA_DIR": str(data_dir),
            "EXPORTER_IMPORT_ROOTS": json.dumps([str(p) for p in import_roots]),
            "EXPORTER_OUTPUT_ROOTS": json.dumps([str(p) for p in output_roots]),
            "EXPORTER_WORKERS": "2",
            "EXPORTER_LEASE_SECONDS": "6",
            "EXPORTER_MAX_ATTEMPTS": "1",
            "EXPORTER_POLL_SECONDS": "0.1",
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.log = open(self.data_dir / f"server-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [str(EXPORTER), "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.data_dir / f"server-{self.port}.log").read_text()
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=1).json()
                if len(health["workers"]) == int(self.env["EXPORTER_WORKERS"]):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not come up in 60 s")

    def kill(self) -> None:
        """SIGKILL the server alone: its workers find themselves orphaned and exit."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the server's whole process group (its workers too), then reap it."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.log.close()

    def health(self) -> dict:
        return httpx.get(f"{self.url}/healthz", timeout=10).json()

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.url}/v1beta1/{path}", timeout=120, **kwargs)

    def import_model(self, model: Path, model_id: str) -> None:
        """models:import of a model folder as `model_id` into the test project; it must be accepted."""
        imported = self.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(model), "modelId": model_id})
        assert imported.status_code == 200, imported.text

    def wait(self, operation: str, timeout: float = 300, headers: dict | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            response = self.call("POST", f"{operation}:wait", json={"timeout": "20s"}, headers=headers or {})
            assert response.status_code == 200, response.text
            body = response.json()
            if body["done"] or time.monotonic() > deadline:
                return body


def export_burst(server: Server, destination: Path, clients: int = 20) -> tuple[list[str], list[str]]:
    """`clients` clients post the same export of the canary into `destination` at the same moment:
    (the accepted operations' names, the refused ones' error statuses)."""
    from concurrent.futures import ThreadPoolExecutor

    body = json.dumps({"outputConfig": {"gcsDestination": {"outputUriPrefix": str(destination)}}})

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1beta1/{PARENT}/models/canary:export",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )

    with ThreadPoolExecutor(clients) as pool:
        responses = list(pool.map(post, range(clients)))
    accepted = [r.json()["name"] for r in responses if r.status_code == 200]
    refused = [r.json()["error"]["status"] for r in responses if r.status_code != 200]
    return accepted, refused
