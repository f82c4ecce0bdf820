"""The export service against a real server and real worker processes on loopback."""

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format

from service_harness import PARENT, Server

pytestmark = pytest.mark.slow

from conftest import CACHE  # noqa: E402


def parse_operation(body: dict):
    """Every Operation the server emits must parse into the real v1beta1 proto classes."""
    from google.cloud.automl_v1beta1.types import operations  # registers OperationMetadata
    from google.longrunning import operations_pb2
    from google.rpc import error_details_pb2  # noqa: F401  (BadRequest in error details)

    operation = json_format.ParseDict(body, operations_pb2.Operation(), ignore_unknown_fields=False)
    metadata = operations.OperationMetadata.pb()()
    assert operation.metadata.Unpack(metadata)
    if operation.done:
        assert operation.WhichOneof("result") in ("response", "error")
    else:
        assert operation.WhichOneof("result") is None
    return operation, metadata


@pytest.fixture(scope="module")
def server(tmp_path_factory, canary_model, digits_model):
    data = tmp_path_factory.mktemp("service")
    outputs = data / "exports"
    outputs.mkdir()
    running = Server(data, import_roots=[CACHE], output_roots=[outputs]).start()
    running.outputs = outputs
    for model_id, folder in (("canary", canary_model), ("digits", digits_model)):
        response = running.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(folder), "modelId": model_id})
        assert response.status_code == 200, response.text
    yield running
    running.stop()


def export_body(destination: Path, **extra) -> dict:
    return {"outputConfig": {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(destination)}, **extra}}


def test_health_reports_workers_and_no_tensorflow(server):
    health = server.health()
    assert len(health["workers"]) == 2 and health["tensorflowLoaded"] is False
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    assert "/v1beta1/projects/{project}/locations/{location}/models/{model_verb}" in document["paths"]


def test_models_get_and_list(server):
    model = server.call("GET", f"{PARENT}/models/canary").json()
    assert model["name"] == f"{PARENT}/models/canary"
    assert model["displayName"] == "colour_canary"
    assert model["imageClassificationModelMetadata"] == {"modelType": "mobile-versatile-1"}
    first = server.call("GET", f"{PARENT}/models", params={"pageSize": 1}).json()
    assert len(first["model"]) == 1 and first["nextPageToken"]
    second = server.call("GET", f"{PARENT}/models", params={"pageSize": 1, "pageToken": first["nextPageToken"]}).json()
    assert {first["model"][0]["name"], second["model"][0]["name"]} == {
        f"{PARENT}/models/canary",
        f"{PARENT}/models/digits",
    }


def test_export_runs_to_completion(server):
    destination = server.outputs / "complete"
    response = server.call(
        "POST", f"{PARENT}/models/canary:export?$alt=json;enum-encoding=int", json=export_body(destination)
    )
    assert response.status_code == 200, response.text
    started = response.json()
    parse_operation(started)
    assert started["done"] is False and started["name"].startswith(f"{PARENT}/operations/")
    finished = server.wait(started["name"])
    operation, metadata = parse_operation(finished)
    assert finished["response"] == {"@type": "type.googleapis.com/google.protobuf.Empty"}
    assert metadata.progress_percent == 100
    folder = Path(metadata.export_model_details.output_info.gcs_output_directory)
    assert folder.parent == destination and folder.name.startswith("model-export-colour_canary-")
    assert sorted(p.name for p in folder.iterdir()) == [
        "dict.txt",
        "export_report.json",
        "model.tflite",
        "tflite_metadata.json",
    ]
    report = server.call("GET", f"{started['name']}:exportReport").json()
    assert report["checks"]["verification"]["passed"]
    assert server.health()["tensorflowLoaded"] is False
    listed = server.call("GET", f"{PARENT}/operations", params={"filter": "done=true"}).json()["operations"]
    assert started["name"] in [op["name"] for op in listed]
    for op in listed:
        parse_operation(op)


def error_of(response: httpx.Response, http: int, status: str) -> dict:
    assert response.status_code == http, response.text
    error = response.json()["error"]
    assert error["code"] == http and error["status"] == status
    return error


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "outputConfig"),
        (
            {"outputConfig": {"modelFormat": "caffe", "gcsDestination": {"outputUriPrefix": "/x"}}},
            "outputConfig.modelFormat",
        ),
        (
            {"outputConfig": {"gcsDestination": {"outputUriPrefix": "/x"}, "gcrDestination": {"outputUri": "h/p/i"}}},
            "outputConfig",
        ),
        (
            {"outputConfig": {"gcsDestination": {"outputUriPrefix": "/x"}, "params": {"quantization": "int4"}}},
            "outputConfig.params.quantization",
        ),
        ({"outputConfig": {"gcsDestination": {"outputUriPrefix": "/x"}}, "extra": True}, "extra"),
        (
            {"outputConfig": {"gcsDestination": {"outputUriPrefix": "/elsewhere"}}},
            "outputConfig.gcsDestination.outputUriPrefix",
        ),
    ],
)
def test_bad_export_requests_are_invalid_argument_with_field_violations(server, body, field):
    error = error_of(server.call("POST", f"{PARENT}/models/canary:export", json=body), 400, "INVALID_ARGUMENT")
    (detail,) = error["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert field in [v["field"] for v in detail["fieldViolations"]]


def test_malformed_bodies_and_names(server):
    path = f"{PARENT}/models/canary:export"
    error_of(
        server.call("POST", path, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "INVALID_ARGUMENT",
    )
    error_of(
        server.call("POST", path, content=b"a=b", headers={"content-type": "application/x-www-form-urlencoded"}),
        400,
        "INVALID_ARGUMENT",
    )
    error_of(
        server.call("POST", path, content=b"[" + b"1," * 600_000 + b"1]", headers={"content-type": "application/json"}),
        400,
        "INVALID_ARGUMENT",
    )
    error_of(server.call("POST", path, json=[1, 2]), 400, "INVALID_ARGUMENT")
    error_of(server.call("GET", f"{PARENT}/models/nope"), 404, "NOT_FOUND")
    for bad in (
        "projects/p/locations/l/models/..",
        "projects/p/locations/l/models/a%2Fb",
        "projects//locations/l/models/m",
        "projects/p/locations/l/models/m/extra",
        "projects/p%20q/locations/l/models/m",
    ):
        response = server.call("GET", bad)
        assert response.status_code in (400, 404), (bad, response.text)
        assert response.json()["error"]["status"] in ("INVALID_ARGUMENT", "NOT_FOUND")
    error_of(server.call("GET", f"{PARENT}/operations/none"), 404, "NOT_FOUND")
    error_of(server.call("GET", f"{PARENT}/operations", params={"filter": "state=RUNNING"}), 400, "INVALID_ARGUMENT")
    error_of(server.call("GET", f"{PARENT}/models", params={"pageToken": "garbage"}), 400, "INVALID_ARGUMENT")


def test_import_is_confined_to_allowed_roots(server, tmp_path):
    error = error_of(
        server.call("POST", f"{PARENT}/models:import", json={"sourceUri": str(tmp_path)}), 403, "PERMISSION_DENIED"
    )
    assert "outside the folders models may be imported from" in error["message"]
    error_of(server.call("POST", f"{PARENT}/models:import", json={"sourceUri": "relative"}), 400, "INVALID_ARGUMENT")


def test_cloud_model_cannot_be_exported(server, canary_model):
    response = server.call(
        "POST",
        f"{PARENT}/models:import",
        json={
            "sourceUri": str(canary_model),
            "modelId": "cloudy",
            "model": {"imageClassificationModelMetadata": {"modelType": "cloud"}},
        },
    )
    assert response.status_code == 200, response.text
    error = error_of(
        server.call("POST", f"{PARENT}/models/cloudy:export", json=export_body(server.outputs)),
        400,
        "FAILED_PRECONDITION",
    )
    assert "'cloud'" in error["message"]


def test_cancel_leaves_nothing(server):
    destination = server.outputs / "cancelled"
    started = server.call("POST", f"{PARENT}/models/digits:export", json=export_body(destination)).json()
    assert server.call("POST", f"{started['name']}:cancel", json={}).status_code == 200
    finished = server.wait(started["name"])
    parse_operation(finished)
    assert finished["error"]["code"] == 1
    time.sleep(0.5)
    assert not destination.exists() or list(destination.iterdir()) == []
    assert server.call("DELETE", started["name"]).status_code == 200
    error_of(server.call("GET", started["name"]), 404, "NOT_FOUND")


def worker_holding(server, op_name: str, timeout: float = 120) -> int:
    from exporter.service.store import Store

    store = Store(f"sqlite:///{server.data_dir / 'exporter.db'}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.get_operation(op_name)
        if row.state == "running" and row.lease_owner:
            return server.health()["workers"][row.lease_owner]
        time.sleep(0.05)
    raise AssertionError(f"{op_name} never started running")


def test_sigkilled_worker_fails_only_its_job_and_is_replaced(server):
    destination = server.outputs / "killed"
    victim = server.call("POST", f"{PARENT}/models/digits:export", json=export_body(destination)).json()
    pid = worker_holding(server, victim["name"])
    running = server.call("GET", victim["name"]).json()
    parse_operation(running)  # the running state parses too
    assert running["done"] is False
    bystander = server.call(
        "POST", f"{PARENT}/models/canary:export", json=export_body(server.outputs / "bystander")
    ).json()
    os.kill(pid, signal.SIGKILL)
    failed = server.wait(victim["name"])
    parse_operation(failed)
    assert failed["error"]["code"] == 10 and f"worker process {pid} exited" in failed["error"]["message"]
    assert "response" in server.wait(bystander["name"])
    later = server.call("POST", f"{PARENT}/models/canary:export", json=export_body(server.outputs / "later")).json()
    assert "response" in server.wait(later["name"])
    workers = server.health()["workers"]
    assert len(workers) == 2 and pid not in workers.values()
    assert not destination.exists() or [p for p in destination.iterdir() if not p.name.startswith(".")] == []


def test_official_client_exports_and_raises(server):
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import automl_v1beta1
    from google.cloud.automl_v1beta1.services.auto_ml.transports.rest import AutoMlRestTransport

    transport = AutoMlRestTransport(
        host=f"127.0.0.1:{server.port}", credentials=AnonymousCredentials(), url_scheme="http"
    )
    client = automl_v1beta1.AutoMlClient(transport=transport)
    model = client.get_model(name=f"{PARENT}/models/canary")
    assert model.display_name == "colour_canary"
    destination = server.outputs / "official"
    config = automl_v1beta1.ModelExportOutputConfig(
        model_format="tflite",
        gcs_destination=automl_v1beta1.GcsDestination(output_uri_prefix=str(destination)),
        params={"quantization": "float32"},
    )
    operation = client.export_model(name=model.name, output_config=config)
    operation.result(timeout=300)
    assert operation.metadata.progress_percent == 100
    assert Path(operation.metadata.export_model_details.output_info.gcs_output_directory).parent == destination
    # A failing export raises its google.api_core exception: the destination is a file.
    blocker = server.outputs / "blocker"
    blocker.write_text("not a folder")
    bad = client.export_model(
        name=model.name,
        output_config=automl_v1beta1.ModelExportOutputConfig(
            gcs_destination=automl_v1beta1.GcsDestination(output_uri_prefix=str(blocker / "sub"))
        ),
    )
    with pytest.raises(exceptions.FailedPrecondition):
        bad.result(timeout=300)
    # A cancelled one raises Cancelled.
    slow = client.export_model(
        name=f"{PARENT}/models/digits",
        output_config=automl_v1beta1.ModelExportOutputConfig(
            gcs_destination=automl_v1beta1.GcsDestination(output_uri_prefix=str(server.outputs / "cancel-official"))
        ),
    )
    assert slow.cancel() is True
    with pytest.raises(exceptions.Cancelled):
        slow.result(timeout=300)
    with pytest.raises(exceptions.NotFound):
        client.get_model(name=f"{PARENT}/models/missing")


def test_service_command_line(server, canary_model):
    from conftest import run_cli

    def cli(*args):
        result = run_cli(*args, "--server", server.url)
        assert result.returncode == 0, result.stderr
        return result.stdout

    parent = PARENT
    imported = json.loads(
        cli(
            "models",
            "import",
            str(canary_model),
            "--parent",
            parent,
            "--model-id",
            "cli_model",
            "--display-name",
            "cli_canary",
        )
    )
    assert imported["displayName"] == "cli_canary"
    assert json.loads(cli("models", "get", f"{parent}/models/cli_model"))["name"] == f"{parent}/models/cli_model"
    assert f"{parent}/models/cli_model" in cli("models", "list", "--parent", parent)
    started = server.call("POST", f"{parent}/models/cli_model:export", json=export_body(server.outputs / "cli")).json()
    finished = json.loads(cli("operations", "wait", started["name"]))
    assert finished["done"] and "response" in finished
    assert json.loads(cli("operations", "get", started["name"], "--report"))["model"]["displayName"] == "cli_canary"
    assert started["name"] in cli("operations", "list", "--parent", parent, "--filter", "done=true")
    missing = run_cli("operations", "get", f"{parent}/operations/nope", "--server", server.url)
    assert missing.returncode == 1 and missing.stderr.startswith("exporter: NOT_FOUND: ")
    down = run_cli("models", "list", "--server", "http://127.0.0.1:9")
    assert down.returncode == 1 and down.stderr.startswith("exporter: UNAVAILABLE: ")


@pytest.mark.parametrize(
    "model_format,artifact",
    [("tf_js", "model.json"), ("core_ml", "model.mlmodel"), ("onnx", "model.onnx"), ("openvino", "model.bin")],
)
def test_other_formats_through_the_api(server, model_format, artifact):
    destination = server.outputs / model_format
    started = server.call(
        "POST",
        f"{PARENT}/models/canary:export",
        json={
            "outputConfig": {
                "modelFormat": model_format,
                "gcsDestination": {"outputUriPrefix": f"file://{destination}"},
            }
        },
    ).json()
    finished = server.wait(started["name"])
    _, metadata = parse_operation(finished)
    assert "response" in finished, finished
    assert (Path(metadata.export_model_details.output_info.gcs_output_directory) / artifact).exists()


def test_edgetpu_without_a_compiler_fails_its_operation_clearly(server):
    started = server.call(
        "POST",
        f"{PARENT}/models/canary:export",
        json={
            "outputConfig": {
                "modelFormat": "edgetpu_tflite",
                "gcsDestination": {"outputUriPrefix": str(server.outputs / "edgetpu")},
            }
        },
    ).json()
    finished = server.wait(started["name"])
    parse_operation(finished)
    # The service exports in its sandbox, where only a compiler binary can run (the image needs dockerd).
    assert (
        finished["error"]["code"] == 9
        and "no edgetpu_compiler binary inside the export sandbox" in finished["error"]["message"]
    )
    # The failed attempt's report is served, with the compatibility report written before the
    # compiler was looked for; the service keeps nothing in the destination.
    report = server.call("GET", f"{started['name']}:exportReport").json()
    assert report["state"] == "FAILED" and report["error"] == finished["error"]
    compatibility = report["convertReports"]["edgetpu_compatibility.json"]
    assert compatibility["mappedToEdgeTpu"] == compatibility["operations"] > 0
    destination = server.outputs / "edgetpu"
    assert not destination.exists() or list(destination.iterdir()) == []
