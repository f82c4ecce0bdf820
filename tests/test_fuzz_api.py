"""Schemathesis against the service's own OpenAPI document, on real servers with no workers.

Every operation of the document is called with generated paths, queries and headers: on a server
without auth, and on one with auth, both with a valid token and with none. No answer may be a
5xx, every error must be a google.rpc.Status body, and neither server may log a traceback.
``FUZZ_EXAMPLES`` sets the examples per operation (25 by default, for CI; see docs/development.md).
"""

import hashlib
import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from exporter.service.auth import PERMISSIONS
from service_harness import Server

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
TOKEN = "token-for-the-fuzzer"
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES <= 25
)
SERVERS: list[Server] = []


def start(data, **env: str) -> Server:
    roots = data / "roots"
    roots.mkdir()
    # No workers: an export the fuzzer manages to queue never runs.
    server = Server(data, import_roots=[roots], output_roots=[roots], EXPORTER_WORKERS="0", **env).start()
    SERVERS.append(server)
    return server


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("fuzz-open"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz-auth")
    auth_file = data / "auth.json"
    principal = {
        "token_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()],
        "grants": [{"permissions": list(PERMISSIONS), "resources": ["projects/*"]}],
    }
    auth_file.write_text(json.dumps({"principals": {"fuzzer": principal}}))
    server = start(data, EXPORTER_AUTH_FILE=str(auth_file))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_schema(open_server):
    return schemathesis.openapi.from_url(f"{open_server.url}/openapi.json")


@pytest.fixture(scope="module")
def auth_schema(auth_server):
    return schemathesis.openapi.from_url(
        f"{auth_server.url}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
    )


def check(case, response) -> None:
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error["code"], int) and error["code"] == response.status_code, body
        assert isinstance(error["message"], str) and error["message"], body
        assert isinstance(error["status"], str) and error["status"].isupper(), body


open_api = schemathesis.pytest.from_fixture("open_schema")
auth_api = schemathesis.pytest.from_fixture("auth_schema")


@open_api.parametrize()
@FUZZ_SETTINGS
def test_without_auth(case, open_server):
    check(case, case.call(base_url=open_server.url, timeout=30))


@auth_api.parametrize()
@FUZZ_SETTINGS
def test_with_auth(case, auth_server):
    case.headers = {key: value for key, value in (case.headers or {}).items() if key.lower() != "authorization"}
    check(case, case.call(base_url=auth_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30))
    anonymous = case.call(base_url=auth_server.url, timeout=30)
    check(case, anonymous)
    if case.path != "/healthz":
        assert anonymous.status_code >= 400, anonymous.text  # never an answer without a token


def test_no_server_logged_a_traceback(open_server, auth_server):
    for server in (open_server, auth_server):
        server.log.flush()
        for log in server.data_dir.glob("server-*.log"):
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, text[-4000:]
