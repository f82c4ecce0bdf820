"""Image references normalized as the Docker CLI does, and Docker Hub reached as it is served."""

import base64
import json
import time

import pytest

from containers.registry import DOCKER_HUB_ENDPOINT, ImageRef, RegistryClient, docker_config_credentials
from exporter.core.errors import Code, ExportError

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("tensorflow/serving:2.19.0", "docker.io/tensorflow/serving:2.19.0"),
        ("tensorflow/serving:2.19.0-gpu", "docker.io/tensorflow/serving:2.19.0-gpu"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/tensorflow/serving", "docker.io/tensorflow/serving:latest"),
        ("registry-1.docker.io/tensorflow/serving:2.19.0", "docker.io/tensorflow/serving:2.19.0"),
        ("localhost/p/image", "localhost/p/image:latest"),
        ("localhost:5000/p/image:v1", "localhost:5000/p/image:v1"),
        ("127.0.0.1:5000/p/image:v1", "127.0.0.1:5000/p/image:v1"),
        ("gcr.io/my-project/digits", "gcr.io/my-project/digits:latest"),
        ("eu.gcr.io/p/nested/path/image:tag_1.0", "eu.gcr.io/p/nested/path/image:tag_1.0"),
        ("Registry/p/image", "Registry/p/image:latest"),  # an upper-case first part is a host
        ("mirror.example.com:8443/tensorflow/serving:2.19.0", "mirror.example.com:8443/tensorflow/serving:2.19.0"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox:latest@{DIGEST}"),
        (f"gcr.io/p/image:v1@{DIGEST}", f"gcr.io/p/image:v1@{DIGEST}"),
        ("a_b/c--d/e.f:x", "docker.io/a_b/c--d/e.f:x"),
    ],
)
def test_references_normalize_as_the_docker_cli_does(text, normalized):
    assert str(ImageRef.parse(text)) == normalized


@pytest.mark.parametrize(
    "text",
    [
        "docker.io/Tensorflow/serving",
        "gcr.io/p/Image",
        "gcr.io//image",
        "image:",
        "image:-bad",
        "image@sha256:short",
        "image@md5:" + "0" * 32,
        "",
        "gcr.io/p/image:" + "t" * 129,
        "bad host/p/image",
    ],
)
def test_malformed_references_are_invalid_argument(text):
    with pytest.raises(ExportError) as raised:
        ImageRef.parse(text)
    assert raised.value.code is Code.INVALID_ARGUMENT and repr(text) in raised.value.message


def test_a_digest_is_what_the_registry_is_asked_for():
    assert ImageRef.parse(f"gcr.io/p/image:v1@{DIGEST}").reference == DIGEST
    assert ImageRef.parse("gcr.io/p/image:v1").reference == "v1"


def test_docker_hub_is_served_from_its_registry_endpoint():
    assert RegistryClient("docker.io").base == f"https://{DOCKER_HUB_ENDPOINT}"
    assert RegistryClient("127.0.0.1:5000").base == "http://127.0.0.1:5000"


def test_docker_login_credentials_for_docker_hub(tmp_path, monkeypatch):
    auth = base64.b64encode(b"someone:secret").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_credentials("docker.io") == ("someone", "secret")
    assert docker_config_credentials("gcr.io") is None


def test_unreachable_docker_hub_is_unavailable_naming_it_and_the_settings():
    """No internet here: the real request to Docker Hub fails, and says what to do instead."""
    started = time.monotonic()
    with pytest.raises(ExportError) as raised:
        RegistryClient("docker.io").manifest("tensorflow/serving", "2.19.0")
    assert raised.value.code is Code.UNAVAILABLE
    assert DOCKER_HUB_ENDPOINT in raised.value.message and "EXPORTER_SERVING_BASE_CPU" in raised.value.message
    assert time.monotonic() - started < 30
