"""docker exports through the daemonless back end, against a real registry on loopback, checked
with an independent client (Debian's skopeo)."""

import json
import subprocess
import tarfile

import pytest

from exporter.core.errors import Code, ExportError
from exporter.run import export_model
from registry_harness import LocalRegistry

SKOPEO = "/usr/bin/skopeo"


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    first = LocalRegistry(tmp_path_factory.mktemp("registry-a"))
    second = LocalRegistry(tmp_path_factory.mktemp("registry-b"))
    first.bases = {
        "none": first.push_base("tensorflow/serving", "2.19.0"),
        "nvidia": first.push_base("tensorflow/serving", "2.19.0-gpu"),
    }
    yield first, second
    first.stop()
    second.stop()


def docker_config(uri: str, gpu: str = "none", builder: str = "daemonless") -> dict:
    return {
        "modelFormat": "docker",
        "gcrDestination": {"outputUri": uri},
        "params": {"cpu_architecture": "x86_64", "gpu_architecture": gpu, "builder": builder},
    }


def skopeo(*args: str) -> str:
    done = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("gpu", ["none", "nvidia"])
def test_export_pushes_the_serving_image(canary_model, registries, monkeypatch, tmp_path, gpu):
    registry, _ = registries
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", registry.bases["none"])
    monkeypatch.setenv("EXPORTER_SERVING_BASE_GPU", registry.bases["nvidia"])
    target = f"{registry.host}/my-project/canary:{gpu}"
    result = export_model(canary_model, docker_config(target, gpu))
    image = result.report["image"]
    assert result.output_dir == f"{target}@{image['digest']}"
    assert image["base"] == registry.bases[gpu]
    # Within one registry the base is mounted, and only the model layer and config are uploaded.
    assert image["baseBlobsMounted"] + image["baseBlobsAlreadyThere"] == 2 and image["baseBlobsCopied"] == 0
    assert image["bytesUploaded"] < image["modelLayerBytes"] + 10_000
    assert result.report["checks"]["verification"]["passed"]

    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert inspected["Digest"] == image["digest"] and len(inspected["Layers"]) == 2
    assert "MODEL_NAME=default" in inspected["Env"] and "MODEL_NAME=base" not in inspected["Env"]
    assert inspected["Labels"]["com.automl-export-engine.gpu-architecture"] == gpu
    # The model is named by its content, never by the path it was exported from.
    assert inspected["Labels"]["com.automl-export-engine.model-digest"] == result.report["model"]["digest"]
    assert not any(str(canary_model.parent) in value for value in inspected["Labels"].values())
    config = json.loads(skopeo("inspect", "--tls-verify=false", "--config", f"docker://{target}"))
    assert set(config["config"]["ExposedPorts"]) == {"8500/tcp", "8501/tcp"}
    copy = tmp_path / "copy"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"dir:{copy}")
    last_layer = copy / inspected["Layers"][-1].removeprefix("sha256:")
    with tarfile.open(last_layer) as layer:
        names = set(layer.getnames())
    assert {"models/default/1/saved_model.pb", "models/default/dict.txt"} <= names
    assert any(n.startswith("models/default/1/variables/") for n in names)


def test_linux_amd64_is_chosen_from_an_image_index(canary_model, registries, monkeypatch, tmp_path):
    registry, _ = registries
    index = registry.push_index("tensorflow/serving", "2.19.0-multi", registry.bases["none"])
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", index)
    target = f"{registry.host}/my-project/from-index:v1"
    export_model(canary_model, docker_config(target))
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert len(inspected["Layers"]) == 2  # the amd64 base's layer and the model's, not the decoy's


def test_from_another_registry_the_base_is_copied(canary_model, registries, monkeypatch):
    first, second = registries
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", first.bases["none"])
    result = export_model(canary_model, docker_config(f"{second.host}/p/canary:v1"))
    image = result.report["image"]
    assert image["baseBlobsMounted"] == 0 and image["baseBlobsCopied"] == 2
    assert image["bytesUploaded"] > image["modelLayerBytes"]


def test_missing_base_image_and_unreachable_registry(canary_model, registries, monkeypatch):
    registry, _ = registries
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", f"{registry.host}/tensorflow/serving:no-such-tag")
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, docker_config(f"{registry.host}/p/missing-base:v1"))
    assert raised.value.code is Code.NOT_FOUND and "no-such-tag" in raised.value.message
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", "127.0.0.1:9/tensorflow/serving:2.19.0")
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, docker_config(f"{registry.host}/p/unreachable:v1"))
    assert raised.value.code is Code.UNAVAILABLE and "unreachable" in raised.value.message
    tags = subprocess.run(
        [SKOPEO, "list-tags", "--tls-verify=false", f"docker://{registry.host}/p/missing-base"],
        capture_output=True,
        text=True,
    )
    assert "v1" not in tags.stdout  # no tag was written


@pytest.mark.slow
def test_docker_through_the_cli_and_the_api(canary_model, registries, tmp_path):
    from conftest import CACHE, run_cli
    from service_harness import PARENT, Server

    registry, _ = registries
    base = {"EXPORTER_SERVING_BASE_CPU": registry.bases["none"]}
    target = f"{registry.host}/cli/canary:v1"
    context = tmp_path / "context"
    result = run_cli(
        "export",
        "--model",
        str(canary_model),
        "--format",
        "docker",
        "--output",
        target,
        "--param",
        "builder=daemonless",
        "--build-context",
        str(context),
        "--json",
        env=base,
    )
    assert result.returncode == 0, result.stderr
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.startswith(f"FROM {registry.bases['none']}\nCOPY model /models/default/1\n")
    assert (context / "model" / "saved_model.pb").is_file() and (context / "dict.txt").is_file()
    assert json.loads(result.stdout)["outputDir"].startswith(f"{target}@sha256:")
    skopeo("inspect", "--tls-verify=false", f"docker://{target}")

    server = Server(tmp_path, import_roots=[CACHE], output_roots=[], EXPORTER_WORKERS="1", **base).start()
    try:
        assert (
            server.call(
                "POST", f"{PARENT}/models:import", json={"sourceUri": str(canary_model), "modelId": "canary"}
            ).status_code
            == 200
        )
        api_target = f"{registry.host}/api/canary:v1"
        started = server.call(
            "POST",
            f"{PARENT}/models/canary:export",
            json={
                "outputConfig": {
                    "modelFormat": "docker",
                    "gcrDestination": {"outputUri": api_target},
                    "params": {"builder": "daemonless"},
                }
            },
        ).json()
        finished = server.wait(started["name"])
        assert "response" in finished, finished
        assert finished["metadata"]["exportModelDetails"] == {}  # no folder: the image is in the report
        report = server.call("GET", f"{started['name']}:exportReport").json()
        assert report["image"]["image"] == api_target
        skopeo("inspect", "--tls-verify=false", f"docker://{api_target}")
    finally:
        server.stop()


def test_sandboxed_docker_export_builds_outside_the_sandbox(canary_model, registries, monkeypatch):
    """The serving SavedModel is converted and verified in the sandbox; the image is built and
    pushed by the parent when it publishes (the sandbox has no network to reach a registry)."""
    from exporter.sandbox import Sandbox

    registry, _ = registries
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", registry.bases["none"])
    target = f"{registry.host}/my-project/canary:sandboxed"
    result = export_model(canary_model, docker_config(target), sandbox=Sandbox())
    assert result.report["sandbox"]["mode"] == "bubblewrap"
    assert result.report["checks"]["verification"]["passed"]
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert inspected["Digest"] == result.report["image"]["digest"]
