"""Pushing to a registry that wants credentials (basic auth, htpasswd), with both back ends."""

import tempfile
from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError
from exporter.run import export_model
from registry_harness import DockerEngine, LocalRegistry, docker_config_dir


@pytest.fixture(scope="module")
def locked_registry(tmp_path_factory):
    registry = LocalRegistry(tmp_path_factory.mktemp("locked-registry"), users={"alice": "s3cret"})
    registry.base = registry.push_base("tensorflow/serving", "2.19.0")
    yield registry
    registry.stop()


def export_to(model, registry, builder: str, name: str):
    return export_model(
        model,
        {
            "modelFormat": "docker",
            "gcrDestination": {"outputUri": f"{registry.host}/team/{name}:v1"},
            "params": {"builder": builder},
        },
    )


@pytest.mark.parametrize("builder", ["daemonless", "engine"])
def test_push_with_the_docker_config_credentials(canary_model, locked_registry, monkeypatch, tmp_path, builder):
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", locked_registry.base)
    monkeypatch.setenv(
        "DOCKER_CONFIG", str(docker_config_dir(tmp_path / "docker", locked_registry.host, "alice", "s3cret"))
    )
    engine = None
    if builder == "engine":
        engine = DockerEngine(Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp")))
        monkeypatch.setenv("DOCKER_HOST", engine.host)
    try:
        result = export_to(canary_model, locked_registry, builder, f"canary-{builder}")
        assert result.report["image"]["backend"] == builder
    finally:
        if engine:
            engine.stop()


@pytest.mark.parametrize("password", [None, "wrong"])
def test_refused_push_is_permission_denied(canary_model, locked_registry, monkeypatch, tmp_path, password):
    monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", locked_registry.base)
    config = tmp_path / "docker"
    if password:
        docker_config_dir(config, locked_registry.host, "alice", password)
    else:
        config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    with pytest.raises(ExportError) as raised:
        export_to(canary_model, locked_registry, "daemonless", "refused")
    assert raised.value.code is Code.PERMISSION_DENIED and "HTTP 401" in raised.value.message


def test_push_through_the_registry_token_flow(canary_model, tmp_path_factory, monkeypatch, tmp_path):
    """The registry answers 401 with a Bearer challenge; the client gets a token from the issuer."""
    from token_issuer import TokenIssuer

    root = tmp_path_factory.mktemp("token-registry")
    issuer = TokenIssuer(root, {"bob": "t0ken-pass"})
    registry = LocalRegistry(root, token_auth=issuer.registry_auth())
    registry.credentials = ("bob", "t0ken-pass")
    try:
        base = registry.push_base("tensorflow/serving", "2.19.0")
        monkeypatch.setenv("EXPORTER_SERVING_BASE_CPU", base)
        monkeypatch.setenv(
            "DOCKER_CONFIG", str(docker_config_dir(tmp_path / "docker", registry.host, "bob", "t0ken-pass"))
        )
        result = export_to(canary_model, registry, "daemonless", "canary-token")
        assert result.report["image"]["baseBlobsMounted"] == 2
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config_dir(tmp_path / "wrong", registry.host, "bob", "nope")))
        with pytest.raises(ExportError) as raised:
            export_to(canary_model, registry, "daemonless", "canary-refused")
        assert raised.value.code is Code.PERMISSION_DENIED and "token service" in raised.value.message
    finally:
        registry.stop()
        issuer.stop()
