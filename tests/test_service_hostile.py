"""Hostile HTTP and confinement: bodies limited while read, deep JSON, 405s, curl's content type,
documents behind auth, output buckets and folders per project, models per project, links swapped
into a destination, and workers recycled after N jobs."""

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import CACHE
from exporter.core.errors import Code, ExportError
from exporter.core.request import parse_output_config
from exporter.destinations import open_destination
from exporter.service.app import create_app
from exporter.service.settings import ServiceSettings
from service_harness import PARENT, Server

OTHER = "projects/other-project/locations/us-central1"
TOKEN = "token-for-docs"


def error_of(response: httpx.Response, http: int, status: str) -> dict:
    assert response.status_code == http, response.text
    error = response.json()["error"]
    assert error["code"] == http and error["status"] == status, error
    return error


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def client(tmp_path):
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", workers=0), start_workers=False)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory):
    """A server with no workers: nothing it queues runs."""
    data = tmp_path_factory.mktemp("hostile")
    running = Server(data, import_roots=[CACHE], output_roots=[data], EXPORTER_WORKERS="0").start()
    yield running
    running.stop()


# 1. The body limit holds while the body is read, chunked included.
@pytest.mark.slow
def test_a_chunked_body_is_refused_at_the_limit_without_being_held(idle_server):
    pid = idle_server.process.pid
    before = rss_kib(pid)
    chunk = b"x" * (1 << 20)

    def body():
        for _ in range(200):  # 200 MiB, chunked: no Content-Length
            yield chunk

    response = httpx.post(
        f"{idle_server.url}/v1beta1/{PARENT}/operations/x:wait",
        content=body(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert "1048576" in error["message"] and "EXPORTER_MAX_BODY_BYTES" in error["message"]
    grown = rss_kib(pid) - before
    assert grown < 40 * 1024, f"the server grew by {grown} KiB reading a refused body"
    assert idle_server.health()["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("mib", [4, 32])
def test_a_client_that_sends_its_whole_body_first_gets_the_400(idle_server, mib):
    """urllib writes the whole body before it reads the answer: the server reads and drops the
    rest of an oversized body, then answers 400 with Connection: close, instead of a reset."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{idle_server.url}/v1beta1/{PARENT}/models:import",
        data=b"x" * (mib << 20),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 400
    assert caught.value.headers["connection"] == "close"
    error = json.loads(caught.value.read())["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "EXPORTER_MAX_BODY_BYTES" in error["message"]
    assert idle_server.health()["status"] == "ok"


# 2. Deep and wide JSON: INVALID_ARGUMENT, never a 500.
def test_deep_and_wide_json_bodies_are_invalid_argument(client):
    path = f"/v1beta1/{PARENT}/models:import"
    json_type = {"content-type": "application/json"}
    deep = client.post(path, content=b"[" * 100_000 + b"]" * 100_000, headers=json_type)
    assert "nested deeper" in error_of(deep, 400, "INVALID_ARGUMENT")["message"]
    objects = client.post(path, content=b'{"a":' * 100 + b"1" + b"}" * 100, headers=json_type)
    assert "nested deeper" in error_of(objects, 400, "INVALID_ARGUMENT")["message"]
    wide = client.post(path, content=b"[" + b"0," * 400_000 + b"0]", headers=json_type)
    error_of(wide, 400, "INVALID_ARGUMENT")
    too_wide = client.post(path, content=b"[" + b"0," * 600_000 + b"0]", headers=json_type)
    assert "larger than" in error_of(too_wide, 400, "INVALID_ARGUMENT")["message"]


# 3. A wrong method on a path the API has: 405 with Allow and a google.rpc body.
@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "models/x:export", "POST"),
        ("GET", "models:import", "POST"),
        ("POST", "models", "GET"),
        ("DELETE", "models/x", "GET"),
        ("PUT", "operations/x", "DELETE, GET"),
        ("GET", "operations/x:cancel", "POST"),
        ("GET", "operations/x:wait", "POST"),
        ("POST", "operations/x:exportReport", "GET"),
    ],
)
def test_a_wrong_method_is_405_with_allow(client, method, path, allowed):
    response = client.request(method, f"/v1beta1/{PARENT}/{path}")
    error = error_of(response, 405, "UNIMPLEMENTED")
    assert response.headers["allow"] == allowed
    assert method in error["message"]


def test_right_methods_still_reach_their_routes(client):
    error_of(client.post(f"/v1beta1/{PARENT}/models/x:foo"), 404, "NOT_FOUND")
    error_of(client.get(f"/v1beta1/{PARENT}/operations/x:foo"), 404, "NOT_FOUND")
    error_of(client.get(f"/v1beta1/{PARENT}/models/x"), 404, "NOT_FOUND")


# 8. The API documents need a token when auth is on, unless EXPORTER_PUBLIC_DOCS.
@pytest.mark.parametrize("public", [False, True])
def test_documents_are_behind_auth_unless_public(tmp_path, public):
    auth_file = tmp_path / "auth.json"
    principal = {"token_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()], "grants": []}
    auth_file.write_text(json.dumps({"principals": {"docs": principal}}))
    settings = ServiceSettings(data_dir=tmp_path / "data", workers=0, auth_file=auth_file, public_docs=public)
    with TestClient(create_app(settings, start_workers=False)) as test_client:
        assert test_client.get("/healthz").status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json"):
            anonymous = test_client.get(path)
            if public:
                assert anonymous.status_code == 200, path
            else:
                error_of(anonymous, 401, "UNAUTHENTICATED")
                error_of(test_client.get(path, headers={"Authorization": "Bearer wrong"}), 401, "UNAUTHENTICATED")
            assert test_client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path


# 9. docs/service.md's :wait example, exactly as curl sends it (-d: application/x-www-form-urlencoded).
@pytest.mark.slow
def test_curl_without_a_content_type_is_read_as_json(idle_server, canary_model):
    imported = idle_server.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model)})
    assert imported.status_code == 200, imported.text
    started = idle_server.call(
        "POST",
        f"{imported.json()['name']}:export",
        json={"outputConfig": {"gcsDestination": {"outputUriPrefix": str(idle_server.data_dir / "out")}}},
    )
    assert started.status_code == 200, started.text
    url = f"{idle_server.url}/v1beta1/{started.json()['name']}:wait"
    sent = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", url, "-d", '{"timeout": "0.5s"}'],
        capture_output=True,
        text=True,
        check=True,
    )
    body, code = sent.stdout.rsplit("\n", 1)
    assert code == "200", body
    assert json.loads(body)["done"] is False
    # Still refused: a body that is not JSON, whatever the content type says.
    form = idle_server.call("POST", url.split("/v1beta1/")[1], content=b"timeout=1s")
    error_of(form, 400, "INVALID_ARGUMENT")


# 7. Models are stored per project: the same id in two projects, and 409 for a second import.
@pytest.mark.slow
def test_the_same_model_id_in_two_projects(idle_server, canary_model):
    for parent in (PARENT, OTHER):
        response = idle_server.call(
            "POST", f"{parent}/models:import", json={"sourceUri": str(canary_model), "modelId": "same"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["name"] == f"{parent}/models/same"
    again = idle_server.call(
        "POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "same"}
    )
    error = error_of(again, 409, "ALREADY_EXISTS")
    assert f"{PARENT}/models/same" in error["message"]
    assert str(idle_server.data_dir) not in error["message"]
    stored = idle_server.data_dir / "models"
    assert (stored / "test-project" / "us-central1" / "same").is_dir()
    assert (stored / "other-project" / "us-central1" / "same").is_dir()


# 4 and 6. Output buckets are allow-listed; a project with folders of its own writes only there,
# and no other project writes into them.
def test_output_buckets_and_folders_per_project(tmp_path, canary_model):
    shared, mine = tmp_path / "exports", tmp_path / "exports" / "test-project"
    mine.mkdir(parents=True)
    settings = ServiceSettings(
        data_dir=tmp_path / "data",
        workers=0,
        import_roots=[CACHE],
        output_roots=[shared],
        project_output_roots={"test-project": [mine]},
        output_buckets=["allowed-bucket"],
    )
    field = "outputConfig.gcsDestination.outputUriPrefix"

    def export(test_client, parent, prefix):
        body = {"outputConfig": {"gcsDestination": {"outputUriPrefix": prefix}}}
        return test_client.post(f"/v1beta1/{parent}/models/m:export", json=body)

    with TestClient(create_app(settings, start_workers=False)) as test_client:
        for parent in (PARENT, OTHER):
            body = {"sourceUri": str(canary_model), "modelId": "m"}
            assert test_client.post(f"/v1beta1/{parent}/models:import", json=body).status_code == 200
        refused_bucket = error_of(export(test_client, PARENT, "gs://other-bucket/x"), 400, "INVALID_ARGUMENT")
        assert "EXPORTER_OUTPUT_BUCKETS" in refused_bucket["message"]
        assert refused_bucket["details"][0]["fieldViolations"][0]["field"] == field
        assert export(test_client, PARENT, "gs://allowed-bucket/x").status_code == 200
        assert export(test_client, PARENT, str(mine / "a")).status_code == 200
        outside = error_of(export(test_client, PARENT, str(shared / "elsewhere")), 400, "INVALID_ARGUMENT")
        assert "EXPORTER_PROJECT_OUTPUT_ROOTS" in outside["message"]
        error_of(export(test_client, OTHER, str(mine / "theirs")), 400, "INVALID_ARGUMENT")
        assert export(test_client, OTHER, str(shared / "other-project")).status_code == 200


# 5. A destination folder swapped for a link is never written through.
def folder_request(prefix: Path):
    return parse_output_config({"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(prefix)}})


def test_a_folder_swapped_for_a_link_before_publish_is_refused(tmp_path):
    root, elsewhere = tmp_path / "exports", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    destination = open_destination(folder_request(root / "team" / "out"), output_roots=[str(root)])
    staging = destination.stage("model-export-x")
    (staging / "model.tflite").write_bytes(b"model")
    # While the export runs, the folder is moved away and a link to elsewhere put in its place.
    (root / "team").rename(tmp_path / "moved")
    (root / "team").symlink_to(elsewhere)
    (elsewhere / "out").mkdir()
    with pytest.raises(ExportError) as raised:
        destination.publish(staging, "model-export-x", {})
    assert raised.value.code is Code.FAILED_PRECONDITION
    destination.discard(staging)
    assert list((elsewhere / "out").iterdir()) == []
    assert not (tmp_path / "moved" / "out" / "model-export-x").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("link_target", "refusal"),
    [
        # the link resolves outside the output roots: refused by the worker's check of the request
        ("elsewhere", (Code.INVALID_ARGUMENT, "EXPORTER_OUTPUT_ROOTS")),
        # the link stays inside a root: refused by the walk that never follows links
        ("exports/elsewhere", (Code.FAILED_PRECONDITION, "link")),
    ],
)
def test_a_folder_swapped_while_its_export_waits_in_the_queue_is_not_written_through(
    tmp_path, canary_model, link_target, refusal
):
    """A real server queues the export (no workers); the folder is swapped for a link to another
    folder; a server with a worker then runs it: refused, nothing written anywhere."""
    root, elsewhere = tmp_path / "exports", tmp_path / link_target
    (root / "team" / "out").mkdir(parents=True)
    (elsewhere / "out").mkdir(parents=True)
    idle = Server(tmp_path, import_roots=[CACHE], output_roots=[root], EXPORTER_WORKERS="0").start()
    try:
        imported = idle.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "c"})
        assert imported.status_code == 200, imported.text
        prefix = str(root / "team" / "out")
        body = {"outputConfig": {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": prefix}}}
        started = idle.call("POST", f"{PARENT}/models/c:export", json=body)
        assert started.status_code == 200, started.text
    finally:
        idle.stop()
    (root / "team").rename(tmp_path / "moved")
    (root / "team").symlink_to(elsewhere)
    working = Server(tmp_path, import_roots=[CACHE], output_roots=[root], EXPORTER_WORKERS="1").start()
    try:
        finished = working.wait(started.json()["name"])
    finally:
        working.stop()
    code, words = refusal
    assert finished["done"] and finished["error"]["code"] == code.value, finished
    assert words in finished["error"]["message"]
    assert list((elsewhere / "out").iterdir()) == []
    assert list((tmp_path / "moved" / "out").iterdir()) == []


def test_a_folder_that_is_a_link_when_staging_is_refused(tmp_path):
    root, elsewhere = tmp_path / "exports", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere)
    destination = open_destination(folder_request(root / "link" / "out"), output_roots=[str(root)])
    with pytest.raises(ExportError) as raised:
        destination.stage("model-export-x")
    assert raised.value.code is Code.FAILED_PRECONDITION and "link" in raised.value.message
    assert list(elsewhere.iterdir()) == []
    outside = open_destination(folder_request(tmp_path / "not-a-root"), output_roots=[str(root)])
    with pytest.raises(ExportError) as raised:
        outside.stage("model-export-x")
    assert raised.value.code is Code.INVALID_ARGUMENT


def test_a_plain_folder_under_a_root_is_published(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    destination = open_destination(folder_request(root / "a" / "b"), output_roots=[str(root)])
    staging = destination.stage("model-export-x")
    (staging / "model.tflite").write_bytes(b"model")
    assert destination.publish(staging, "model-export-x", {}) == str(root / "a" / "b" / "model-export-x")
    assert (root / "a" / "b" / "model-export-x" / "model.tflite").read_bytes() == b"model"
    assert [p.name for p in (root / "a" / "b").iterdir()] == ["model-export-x"]


# 10. Workers recycled after EXPORTER_WORKER_MAX_JOBS, replaced without a failure.
@pytest.mark.slow
def test_a_worker_is_recycled_after_its_jobs_and_replaced(tmp_path, canary_model):
    outputs = tmp_path / "exports"
    outputs.mkdir()
    server = Server(
        tmp_path, import_roots=[CACHE], output_roots=[outputs], EXPORTER_WORKERS="1", EXPORTER_WORKER_MAX_JOBS="1"
    ).start()
    try:
        imported = server.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "c"})
        assert imported.status_code == 200, imported.text
        pids = []
        for n in range(2):
            pids.append(set(server.health()["workers"].values()))
            body = {
                "outputConfig": {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(outputs / str(n))}}
            }
            started = server.call("POST", f"{PARENT}/models/c:export", json=body)
            assert started.status_code == 200, started.text
            finished = server.wait(started.json()["name"])
            assert "response" in finished, finished
            deadline = time.monotonic() + 60
            while set(server.health()["workers"].values()) in (pids[-1], set()) and time.monotonic() < deadline:
                time.sleep(0.2)
        pids.append(set(server.health()["workers"].values()))
        assert len(pids[0]) == len(pids[1]) == len(pids[2]) == 1
        assert pids[0] != pids[1] != pids[2] != pids[0]
        assert not any(os.path.exists(f"/proc/{pid}") for pid in pids[0])
    finally:
        server.stop()
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "recycled" in log and "Traceback" not in log
