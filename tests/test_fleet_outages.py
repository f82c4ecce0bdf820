"""The store stops for a while: a PostgreSQL cluster of the test's own (never the machine's
shared one) is stopped under a running service and started again. The API answers 503
UNAVAILABLE meanwhile and recovers; no operation is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from conftest import CACHE
from fleet_harness import exports_and_staging, wait_for
from service_harness import PARENT, Server, free_port

pytestmark = pytest.mark.slow


class PostgresCluster:
    """A throw-away cluster (initdb), run as the postgres user on a loopback port of its own."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="exporter-pg-"))
        shutil.chown(self.folder, "postgres")
        self.data, self.port = self.folder / "data", free_port()
        self._as_postgres(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres"])

    def _as_postgres(self, command: list[str]) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            ["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"]
        )

    def stop(self) -> None:
        self._as_postgres(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def cluster():
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.remove()


def test_postgresql_stopped_under_a_running_export(tmp_path, canary_model, cluster):
    outputs = tmp_path / "exports"
    outputs.mkdir()
    server = Server(
        tmp_path,
        import_roots=[CACHE],
        output_roots=[outputs],
        EXPORTER_DATABASE_URL=cluster.url,
        EXPORTER_SANDBOX="off",
        EXPORTER_LIVENESS_SECONDS="5",
        EXPORTER_MAX_ATTEMPTS="3",
    ).start()
    try:
        imported = server.call(
            "POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "canary"}
        )
        assert imported.status_code == 200, imported.text
        body = {"outputConfig": {"gcsDestination": {"outputUriPrefix": str(outputs / "out")}}}
        name = server.call("POST", f"{PARENT}/models/canary:export", json=body).json()["name"]
        wait_for(lambda: server.call("GET", name).json()["metadata"]["progressPercent"] >= 10, 120, "the export")

        cluster.stop()
        for method, path, payload in (("GET", name, None), ("POST", f"{PARENT}/models/canary:export", body)):
            answer = server.call(method, path, json=payload)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["status"] == "UNAVAILABLE"
            assert "store is unavailable" in answer.json()["error"]["message"]
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200  # the API itself is up
        cluster.start()

        done = server.wait(name, timeout=240)  # finished, or requeued and run again: never lost
        assert "response" in done, done
        folders, staging = exports_and_staging(outputs / "out")
        assert len(folders) == 1 and staging == []
        again = server.call("POST", f"{PARENT}/models/canary:export", json=body)
        assert again.status_code == 200, again.text
        assert "response" in server.wait(again.json()["name"], timeout=240)
        assert os.path.isdir(outputs / "out")
    finally:
        server.stop()
