"""docker exports through a real Docker engine (Debian's dockerd) to a loopback registry; the
image pulled back with `docker pull` and skopeo, and run to see the model files in place."""

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError
from exporter.run import export_model
from registry_harness import DockerEngine, LocalRegistry

SKOPEO = "/usr/bin/skopeo"


@pytest.fixture(scope="module")
def engine_and_registry(tmp_path_factory):
    registry = LocalRegistry(tmp_path_factory.mktemp("engine-registry"))
    registry.bases = {
        "none": registry.push_base("tensorflow/serving", "2.19.0"),
        "nvidia": registry.push_base("tensorflow/serving", "2.19.0-gpu"),
    }
    # A short folder: a unix socket path must stay under 108 characters.
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp")))
    yield engine, registry
    engine.stop()
    registry.stop()


@pytest.mark.parametrize("gpu", ["none", "nvidia"])
def test_engine_builds_pushes_and_the_image_runs(canary_model, engine_and_registry, monkeypatch, gpu):
    engine, registry = engine_and_registry
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", registry.bases["none"])
    monkeypatch.setenv("EXPORTER_SERVING_BASE_GPU", registry.bases["nvidia"])
    target = f"{registry.host}/my-project/engine-canary:{gpu}"
    result = export_model(
        canary_model,
        {
            "modelFormat": "docker",
            "gcrDestination": {"outputUri": target},
            "params": {"gpu_architecture": gpu, "builder": "engine"},
        },
    )
    image = result.report["image"]
    assert image["backend"] == "engine" and image["base"] == registry.bases[gpu]
    assert result.output_dir == f"{target}@{image['digest']}"

    inspected = json.loads(
        subprocess.run(
            [SKOPEO, "inspect", "--tls-verify=false", f"docker://{target}"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert inspected["Digest"] == image["digest"]
    assert "MODEL_NAME=default" in inspected["Env"]
    assert inspected["Labels"]["com.automl-export-engine.gpu-architecture"] == gpu

    client = engine.client()
    client.images.remove(target, force=True)  # pull it back from the registry
    pulled = client.images.pull(target)
    assert set(pulled.attrs["Config"]["ExposedPorts"]) == {"8500/tcp", "8501/tcp"}
    listing = client.containers.run(
        target, ["/bin/busybox", "ls", "/models/default/1", "/models/default"], remove=True, network_mode="none"
    ).decode()
    assert "saved_model.pb" in listing and "variables" in listing and "dict.txt" in listing


def test_engine_missing_base_is_a_clear_error(canary_model, engine_and_registry, monkeypatch):
    engine, registry = engine_and_registry
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", f"{registry.host}/tensorflow/serving:no-such-tag")
    with pytest.raises(ExportError) as raised:
        export_model(
            canary_model,
            {
                "modelFormat": "docker",
                "gcrDestination": {"outputUri": f"{registry.host}/p/x:v1"},
                "params": {"builder": "engine"},
            },
        )
    assert raised.value.code in (Code.NOT_FOUND, Code.FAILED_PRECONDITION)
    assert "no-such-tag" in raised.value.message


def test_builder_engine_without_an_engine(canary_model, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ExportError) as raised:
        export_model(
            canary_model,
            {
                "modelFormat": "docker",
                "gcrDestination": {"outputUri": "127.0.0.1:9/p/x:v1"},
                "params": {"builder": "engine"},
            },
        )
    assert raised.value.code is Code.FAILED_PRECONDITION and "no Docker engine is reachable" in raised.value.message
