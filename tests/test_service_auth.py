"""Auth route by route, limits that answer 429, and no listening beyond loopback without auth."""

import hashlib
import json

import pytest

from conftest import CACHE, run_cli
from exporter.service.auth import PERMISSIONS
from service_harness import PARENT, Server

pytestmark = pytest.mark.slow

TOKENS = {"exporter": "token-for-exporter", "reader": "token-for-reader", "outsider": "token-for-outsider"}
ALL = list(PERMISSIONS)  # every permission the service checks


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory, canary_model):
    data = tmp_path_factory.mktemp("auth-service")
    outputs = data / "exports"
    outputs.mkdir()
    grants = {
        "exporter": [{"permissions": ALL, "resources": ["projects/test-project/*"]}],
        "reader": [
            {
                "permissions": ["automl.models.get", "automl.operations.get", "automl.operations.list"],
                "resources": ["projects/test-project/*"],
            }
        ],
        "outsider": [{"permissions": ALL, "resources": ["projects/other-project/*"]}],
    }
    auth_file = data / "auth.json"
    auth_file.write_text(
        json.dumps(
            {"principals": {name: {"token_sha256": [digest(TOKENS[name])], "grants": grants[name]} for name in TOKENS}}
        )
    )
    running = Server(
        data,
        import_roots=[CACHE],
        output_roots=[outputs],
        EXPORTER_AUTH_FILE=str(auth_file),
        EXPORTER_MAX_ACTIVE_EXPORTS_PER_PRINCIPAL="2",
        EXPORTER_WORKERS="1",
    ).start()
    running.outputs = outputs
    imported = running.call(
        "POST",
        f"{PARENT}/models:import",
        json={"sourceUri": str(canary_model), "modelId": "canary"},
        headers=auth("exporter"),
    )
    assert imported.status_code == 200, imported.text
    started = running.call(
        "POST",
        f"{PARENT}/models/canary:export",
        headers=auth("exporter"),
        json={"outputConfig": {"gcsDestination": {"outputUriPrefix": str(outputs)}}},
    ).json()
    running.operation = started["name"]
    assert "response" in running.wait(running.operation, headers=auth("exporter"))
    yield running
    running.stop()


def auth(name: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def routes(server) -> list[tuple[str, str, dict | None, str]]:
    export = {"outputConfig": {"gcsDestination": {"outputUriPrefix": str(server.outputs)}}}
    op = server.operation
    return [
        ("GET", f"{PARENT}/models", None, "automl.models.list"),
        ("POST", f"{PARENT}/models:import", {"sourceUri": str(CACHE / "nowhere")}, "automl.models.create"),
        ("GET", f"{PARENT}/models/canary", None, "automl.models.get"),
        ("POST", f"{PARENT}/models/canary:export", export, "automl.models.export"),
        ("GET", f"{PARENT}/operations", None, "automl.operations.list"),
        ("GET", op, None, "automl.operations.get"),
        ("GET", f"{op}:exportReport", None, "automl.operations.get"),
        ("POST", f"{op}:wait", {"timeout": "1s"}, "automl.operations.get"),
        ("POST", f"{op}:cancel", {}, "automl.operations.cancel"),
        ("DELETE", f"{PARENT}/operations/some-other-id", None, "automl.operations.delete"),
    ]


def test_every_route_needs_a_valid_token(server):
    for method, path, body, _ in routes(server):
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic abc"}):
            response = server.call(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["status"] == "UNAUTHENTICATED"


def test_every_route_checks_its_permission_on_the_resource(server):
    reader_may = {"automl.models.get", "automl.operations.get", "automl.operations.list"}
    for method, path, body, permission in routes(server):
        outsider = server.call(method, path, json=body, headers=auth("outsider"))
        assert outsider.status_code == 403, (path, outsider.text)
        error = outsider.json()["error"]
        assert error["status"] == "PERMISSION_DENIED" and f"permission '{permission}' denied" in error["message"]
        reader = server.call(method, path, json=body, headers=auth("reader"))
        assert (reader.status_code == 403) == (permission not in reader_may), (path, reader.text)
        allowed = server.call(method, path, json=body, headers=auth("exporter"))
        assert allowed.status_code not in (401, 403), (path, allowed.text)


def test_health_needs_no_token(server):
    import httpx

    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_official_client_passes_its_token(server):
    from google.api_core import exceptions
    from google.cloud import automl_v1beta1
    from google.cloud.automl_v1beta1.services.auto_ml.transports.rest import AutoMlRestTransport
    from google.oauth2.credentials import Credentials

    def client(token):
        transport = AutoMlRestTransport(
            host=f"127.0.0.1:{server.port}", credentials=Credentials(token=token), url_scheme="http"
        )
        return automl_v1beta1.AutoMlClient(transport=transport)

    assert client(TOKENS["reader"]).get_model(name=f"{PARENT}/models/canary").display_name == "colour_canary"
    with pytest.raises(exceptions.Forbidden):  # HTTP 403 PERMISSION_DENIED
        client(TOKENS["outsider"]).get_model(name=f"{PARENT}/models/canary")
    # On a 401 the client's auth layer tries to refresh the token, and these credentials cannot.
    from google.auth.exceptions import RefreshError

    with pytest.raises((exceptions.Unauthorized, RefreshError)):
        client("not-a-token").get_model(name=f"{PARENT}/models/canary")


def test_active_exports_per_principal_are_limited(server):
    # Exports the other tests started (the route checks post them) finish first.
    pending = (
        server.call("GET", f"{PARENT}/operations", params={"filter": "done=false"}, headers=auth("exporter"))
        .json()
        .get("operations", [])
    )
    for operation in pending:
        server.wait(operation["name"], headers=auth("exporter"))
    body = {
        "outputConfig": {
            "modelFormat": "tf_saved_model",
            "gcsDestination": {"outputUriPrefix": str(server.outputs / "limit")},
        }
    }
    answers = [
        server.call("POST", f"{PARENT}/models/canary:export", json=body, headers=auth("exporter")) for _ in range(4)
    ]
    codes = [a.status_code for a in answers]
    assert codes[:2] == [200, 200] and 429 in codes[2:], codes
    error = answers[codes.index(429)].json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED" and "already has 2 exports" in error["message"]
    for answer in answers:
        if answer.status_code == 200:
            server.wait(answer.json()["name"], headers=auth("exporter"))


def test_serve_refuses_to_listen_beyond_loopback_without_auth():
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "9")
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without auth" in result.stderr


def test_queue_length_is_limited(tmp_path, canary_model):
    outputs = tmp_path / "exports"
    outputs.mkdir()
    server = Server(
        tmp_path, import_roots=[CACHE], output_roots=[outputs], EXPORTER_WORKERS="0", EXPORTER_MAX_QUEUE="2"
    ).start()
    try:
        assert (
            server.call(
                "POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "canary"}
            ).status_code
            == 200
        )
        body = {"outputConfig": {"gcsDestination": {"outputUriPrefix": str(outputs)}}}
        codes = [server.call("POST", f"{PARENT}/models/canary:export", json=body).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
    finally:
        server.stop()


def test_a_fresh_data_folder_is_made(tmp_path):
    from fastapi.testclient import TestClient

    from exporter.service.app import create_app
    from exporter.service.settings import ServiceSettings

    app = create_app(ServiceSettings(data_dir=tmp_path / "new" / "data", workers=0))
    with TestClient(app) as client:
        assert client.get("/healthz").json()["status"] == "ok"
    assert (tmp_path / "new" / "data" / "exporter.db").is_file()
