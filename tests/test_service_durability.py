"""Operations that last: a server restart loses nothing, PostgreSQL works as the store."""

import time
import uuid

import pytest

from conftest import CACHE
from service_harness import PARENT, Server

pytestmark = pytest.mark.slow


def test_restart_loses_no_operation_and_reclaims_a_running_one(tmp_path, canary_model, digits_model):
    outputs = tmp_path / "exports"
    outputs.mkdir()
    server = Server(tmp_path, import_roots=[CACHE], output_roots=[outputs], EXPORTER_MAX_ATTEMPTS="2").start()
    try:
        assert (
            server.call(
                "POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "canary"}
            ).status_code
            == 200
        )
        assert (
            server.call(
                "POST", f"{PARENT}/models:import", json={"sourceUri": str(digits_model), "modelId": "digits"}
            ).status_code
            == 200
        )

        def body(folder: str) -> dict:
            return {"outputConfig": {"gcsDestination": {"outputUriPrefix": str(outputs / folder)}}}

        done = server.call("POST", f"{PARENT}/models/canary:export", json=body("before")).json()
        assert "response" in server.wait(done["name"])
        running = server.call("POST", f"{PARENT}/models/digits:export", json=body("during")).json()
        deadline = time.monotonic() + 120
        while server.call("GET", running["name"]).json()["metadata"].get("progressPercent", 0) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.kill()  # the server dies mid-export; its workers exit when they see it
    finally:
        server.stop()

    again = Server(tmp_path, import_roots=[CACHE], output_roots=[outputs], EXPORTER_MAX_ATTEMPTS="2")
    again.port = server.port
    again.start()
    try:
        assert "response" in again.call("GET", done["name"]).json()  # kept across the restart
        finished = again.wait(running["name"], timeout=300)  # run again once its lease ran out
        assert "response" in finished, finished
        folders = [p for p in (outputs / "during").iterdir() if not p.name.startswith(".")]
        assert len(folders) == 1 and (folders[0] / "model.tflite").is_file()
    finally:
        again.stop()


@pytest.fixture
def postgres_url():
    """A fresh database on the PostgreSQL that runs on this machine (127.0.0.1:5432, trust)."""
    import psycopg

    name = f"exporter_test_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_service_on_postgresql(tmp_path, canary_model, postgres_url):
    outputs = tmp_path / "exports"
    outputs.mkdir()
    server = Server(tmp_path, import_roots=[CACHE], output_roots=[outputs], EXPORTER_DATABASE_URL=postgres_url).start()
    try:
        assert (
            server.call(
                "POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "canary"}
            ).status_code
            == 200
        )
        started = [
            server.call(
                "POST",
                f"{PARENT}/models/canary:export",
                json={"outputConfig": {"gcsDestination": {"outputUriPrefix": str(outputs / str(i))}}},
            ).json()
            for i in range(3)
        ]
        for operation in started:
            assert "response" in server.wait(operation["name"])
        listed = server.call("GET", f"{PARENT}/operations", params={"filter": "done=true", "pageSize": 2}).json()
        assert len(listed["operations"]) == 2 and listed["nextPageToken"]
    finally:
        server.stop()
    from exporter.service.store import Store

    rows = Store(postgres_url).list_operations(PARENT, True, 0, 10)
    assert sorted(r.name for r in rows) == sorted(op["name"] for op in started)
