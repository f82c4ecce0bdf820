"""gs:// destinations and model import, against gcp-storage-emulator on loopback."""

import hashlib
import uuid

import pytest

from conftest import tflite_config
from converters import REGISTRY
from exporter.core.errors import Code, ExportError
from exporter.run import export_model
from gcs_emulator import StorageEmulator


@pytest.fixture(scope="module")
def emulator():
    running = StorageEmulator()
    yield running
    running.stop()


@pytest.fixture
def bucket(emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    return emulator.client().create_bucket(f"exports-{uuid.uuid4().hex[:8]}")


def names(bucket) -> list[str]:
    return sorted(blob.name for blob in bucket.list_blobs())


def test_export_lands_complete_in_the_bucket(canary_model, bucket):
    result = export_model(canary_model, tflite_config(f"gs://{bucket.name}/team/exports", "uint8"))
    folder = result.output_dir
    assert folder.startswith(f"gs://{bucket.name}/team/exports/model-export-colour_canary-")
    prefix = folder.removeprefix(f"gs://{bucket.name}/")
    assert names(bucket) == [
        f"{prefix}/{n}" for n in ("dict.txt", "export_report.json", "model.tflite", "tflite_metadata.json")
    ]
    model = bucket.blob(f"{prefix}/model.tflite").download_as_bytes()
    (entry,) = [a for a in result.report["artifacts"] if a["path"] == "model.tflite"]
    assert hashlib.sha256(model).hexdigest() == entry["sha256"]


def test_a_published_export_is_found_by_its_name(canary_model, bucket):
    """What the next attempt of an operation reads when its result was not recorded."""
    from exporter.core.request import parse_output_config
    from exporter.destinations import open_destination

    config = tflite_config(f"gs://{bucket.name}/team/exports", "uint8")
    result = export_model(canary_model, config)
    destination = open_destination(parse_output_config(config))
    final_name = result.output_dir.rsplit("/", 1)[1]
    assert destination.find_published(final_name) == (result.output_dir, result.report)
    assert destination.find_published(final_name + "-not-there") is None


def test_missing_bucket_is_not_found_before_any_work(canary_model, emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, tflite_config("gs://no-such-bucket-here/x", "uint8"))
    assert raised.value.code is Code.NOT_FOUND and "no-such-bucket-here" in raised.value.message


def test_a_failed_export_leaves_nothing_in_the_bucket(canary_model, bucket, monkeypatch):
    def crash(source, workdir, params):
        (workdir / "model.tflite").write_bytes(b"half")
        raise RuntimeError("converter blew up")

    monkeypatch.setattr(REGISTRY["tflite"], "convert", crash)
    with pytest.raises(ExportError):
        export_model(canary_model, tflite_config(f"gs://{bucket.name}/out", "uint8"))
    assert names(bucket) == []


def test_service_imports_from_a_bucket_and_exports_to_one(canary_model, bucket, emulator, tmp_path):
    from service_harness import PARENT, Server

    for path in canary_model.rglob("*"):
        if path.is_file():
            bucket.blob(f"models/canary/{path.relative_to(canary_model).as_posix()}").upload_from_filename(str(path))
    server = Server(
        tmp_path,
        import_roots=[],
        output_roots=[],
        STORAGE_EMULATOR_HOST=emulator.url,
        EXPORTER_IMPORT_BUCKETS=f'["{bucket.name}"]',
        EXPORTER_OUTPUT_BUCKETS=f'["{bucket.name}"]',
        EXPORTER_WORKERS="1",
    ).start()
    try:
        refused = server.call("POST", f"{PARENT}/models:import", json={"sourceUri": "gs://other-bucket/m"})
        assert refused.status_code == 403
        imported = server.call(
            "POST",
            f"{PARENT}/models:import",
            json={"sourceUri": f"gs://{bucket.name}/models/canary", "modelId": "canary"},
        )
        assert imported.status_code == 200, imported.text
        # Output buckets are allow-listed like import buckets: another bucket is refused up front.
        elsewhere = server.call(
            "POST",
            f"{PARENT}/models/canary:export",
            json={"outputConfig": {"gcsDestination": {"outputUriPrefix": "gs://other-bucket/exports"}}},
        )
        assert elsewhere.status_code == 400, elsewhere.text
        error = elsewhere.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT" and "EXPORTER_OUTPUT_BUCKETS" in error["message"]
        (violation,) = error["details"][0]["fieldViolations"]
        assert violation["field"] == "outputConfig.gcsDestination.outputUriPrefix"
        started = server.call(
            "POST",
            f"{PARENT}/models/canary:export",
            json={"outputConfig": {"gcsDestination": {"outputUriPrefix": f"gs://{bucket.name}/exports"}}},
        ).json()
        finished = server.wait(started["name"])
        assert "response" in finished, finished
        folder = finished["metadata"]["exportModelDetails"]["outputInfo"]["gcsOutputDirectory"]
        assert folder.startswith(f"gs://{bucket.name}/exports/model-export-colour_canary-")
        assert any(n.endswith("/export_report.json") and n.startswith("exports/") for n in names(bucket))
    finally:
        server.stop()
