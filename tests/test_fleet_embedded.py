"""Faults against the embedded pool: real `exporter serve`, real worker processes, a real
PostgreSQL store. Each ends with exactly one result per operation and one folder per export.

The exports here run without the sandbox (EXPORTER_SANDBOX=off): what is under test is who runs
and publishes an export, and a conversion in the worker process itself dies with it on kill -9.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import CACHE
from exporter.service.store import Store
from fleet_harness import create_database, drop_database, exports_and_staging, wait_for
from service_harness import PARENT, Server, export_burst

pytestmark = pytest.mark.slow


def _settings(url: str, **env: str) -> dict[str, str]:
    return {
        "EXPORTER_DATABASE_URL": url,
        "EXPORTER_SANDBOX": "off",
        "EXPORTER_LIVENESS_SECONDS": "5",
        "EXPORTER_DRAIN_SECONDS": "1",
        "EXPORTER_MAX_ATTEMPTS": "2",
        **env,
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory, canary_model):
    """One server (2 workers, a limit of 6 exports per principal) for the tests that need no
    restart of their own; each writes into its own folder."""
    folder = tmp_path_factory.mktemp("embedded")
    database = create_database()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    outputs = folder / "exports"
    outputs.mkdir()
    server = Server(folder, [CACHE], [outputs], **_settings(url, EXPORTER_MAX_ACTIVE_EXPORTS_PER_PRINCIPAL="6")).start()
    store = Store(url)
    server.import_model(canary_model, "canary")
    yield server, store, outputs
    server.stop()
    store.engine.dispose()
    drop_database(database)


@pytest.fixture
def fleet(tmp_path, canary_model):
    """Servers started by the test (the same port, store and folders on each restart)."""
    database = create_database()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    outputs = tmp_path / "exports"
    outputs.mkdir()
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(tmp_path, import_roots=[CACHE], output_roots=[outputs], **_settings(url, **env))
        if servers:
            server.port = servers[0].port
        servers.append(server.start())
        return server

    store = Store(url)
    yield start, store, outputs, canary_model
    for server in servers:
        server.stop()
    store.engine.dispose()
    drop_database(database)


def _export(server: Server, outputs, folder: str, model_id: str = "canary") -> str:
    body = {"outputConfig": {"gcsDestination": {"outputUriPrefix": str(outputs / folder)}}}
    response = server.call("POST", f"{PARENT}/models/{model_id}:export", json=body)
    assert response.status_code == 200, response.text
    return response.json()["name"]


def _holder_pid(server: Server, store: Store, name: str) -> int:
    """The pid of the worker that holds `name` once its export is past the load stage."""
    row = wait_for(
        lambda: (r := store.get_operation(name)) and r.state == "running" and r.progress_percent >= 10 and r,
        120,
        "the export to be converting",
        every=0.05,
    )
    return server.health()["workers"][row.lease_owner]


def test_kill_9_of_a_worker_mid_export_the_other_finishes_it(shared):
    server, store, outputs = shared
    name = _export(server, outputs, "killed")
    os.kill(_holder_pid(server, store, name), signal.SIGKILL)
    done = server.wait(name)
    assert "response" in done, done
    row = store.get_operation(name)
    assert (row.attempts, row.fence) == (2, 2)  # the killed attempt counted
    folders, staging = exports_and_staging(outputs / "killed")
    assert len(folders) == 1 and staging == []  # the dead attempt's staging folder is gone


def test_a_job_whose_last_attempt_loses_its_worker_fails_saying_so_and_leaves_no_staging(fleet):
    start, store, outputs, canary_model = fleet
    server = start(EXPORTER_MAX_ATTEMPTS="1")
    server.import_model(canary_model, "canary")
    name = _export(server, outputs, "lost")
    os.kill(_holder_pid(server, store, name), signal.SIGKILL)  # after the load stage: staging exists
    done = server.wait(name)
    assert done["error"]["code"] == 10 and "exited with status -9" in done["error"]["message"], done  # ABORTED
    assert exports_and_staging(outputs / "lost") == ([], [])  # no later attempt: removed as it failed


def test_a_worker_stopped_past_its_liveness_publishes_nothing_when_it_resumes(shared):
    server, store, outputs = shared
    name = _export(server, outputs, "stalled")
    stalled = _holder_pid(server, store, name)
    os.kill(stalled, signal.SIGSTOP)
    try:
        # Requeued within seconds (liveness 5 s, lease 6 s), run by the other worker to its end.
        done = server.wait(name)
    finally:
        os.kill(stalled, signal.SIGCONT)
    assert "response" in done, done
    assert store.get_operation(name).fence == 2
    time.sleep(8)  # the stale worker runs on: its heartbeat is refused, so it stops and publishes nothing
    row = store.get_operation(name)
    assert (row.state, row.fence, row.output_dir) == (
        "succeeded",
        2,
        done["metadata"]["exportModelDetails"]["outputInfo"]["gcsOutputDirectory"],
    )
    folders, staging = exports_and_staging(outputs / "stalled")
    assert len(folders) == 1 and staging == []
    log = (server.data_dir / f"server-{server.port}.log").read_text()
    assert "Traceback" not in log


def test_sigterm_of_the_server_hands_the_running_job_back_uncounted(fleet, digits_model):
    start, store, outputs, _ = fleet
    server = start(EXPORTER_MAX_ATTEMPTS="1")  # a counted hand-back would fail it for good
    # The digits model: its conversion and verification outlast the 1 s drain (the canary's may not).
    server.import_model(digits_model, "digits")
    name = _export(server, outputs, "out", "digits")
    _holder_pid(server, store, name)
    server.stop()  # SIGTERM: 1 s of drain, then the job goes back to the queue
    row = store.get_operation(name)
    assert (row.state, row.attempts, row.lease_owner) == ("queued", 0, None)
    again = start(EXPORTER_MAX_ATTEMPTS="1")
    done = again.wait(name)
    assert "response" in done, done
    assert store.get_operation(name).attempts == 1
    folders, staging = exports_and_staging(outputs / "out")
    assert len(folders) == 1 and staging == []


def test_20_clients_at_once_limits_exact_folders_unique(shared):
    """20 clients post at the same moment into one folder: exactly the limit gets in, every
    accepted export ends with its own folder, none is lost or run twice."""
    server, store, outputs = shared
    # The limit is on exports active at once: one that ended during the burst would free a slot
    # for a 7th, so the workers are stopped until every post is answered.
    workers = list(server.health()["workers"].values())
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        accepted, refused = export_burst(server, outputs / "burst")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    assert len(accepted) == 6 and refused == ["RESOURCE_EXHAUSTED"] * 14
    for name in accepted:
        assert "response" in server.wait(name, timeout=300)
    folders, staging = exports_and_staging(outputs / "burst")
    assert len(folders) == 6 and staging == []
    assert sorted(store.get_operation(n).output_dir for n in accepted) == sorted(
        str(outputs / "burst" / f) for f in folders
    )
    assert {store.get_operation(n).attempts for n in accepted} == {1}
