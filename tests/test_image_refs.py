"""Image references normalized as the Docker CLI does, and Docker Hub reached as it is served."""

import base64
import json
import time

import pytest

from containers.registry import DOCKER_HUB_ENDPOINT, ImageRef, RegistryClient, docker_config_credentials
from exporter.core.errors import Code, ExportError

DIGEST = "sha256:" + "0123456789abcdef" * 4


# Each as `docker pull` names it (distribution/reference's ParseNormalizedNamed).
@pytest.mark.parametrize(
    "text, normalized",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("tensorflow/serving:2.19.0", "docker.io/tensorflow/serving:2.19.0"),
        ("tensorflow/serving:2.19.0-gpu", "docker.io/tensorflow/serving:2.19.0-gpu"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/tensorflow/serving", "docker.io/tensorflow/serving:latest"),
        # Only index.docker.io is folded into docker.io; registry-1.docker.io is a host like any other.
        ("registry-1.docker.io/tensorflow/serving:2.19.0", "registry-1.docker.io/tensorflow/serving:2.19.0"),
        ("localhost/p/image", "localhost/p/image:latest"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("localhost:5000/p/image:v1", "localhost:5000/p/image:v1"),
        ("LOCALHOST/p/image", "LOCALHOST/p/image:latest"),  # an upper-case first part is a host
        ("Registry/p/image", "Registry/p/image:latest"),
        ("localhost", "docker.io/library/localhost:latest"),  # no slash: no host
        ("localhost:5000", "docker.io/library/localhost:5000"),  # ... and the colon begins a tag
        ("127.0.0.1:5000/p/image:v1", "127.0.0.1:5000/p/image:v1"),
        ("[::1]:5000/p/image", "[::1]:5000/p/image:latest"),
        ("gcr.io/my-project/digits", "gcr.io/my-project/digits:latest"),
        ("eu.gcr.io/p/nested/path/image:tag_1.0", "eu.gcr.io/p/nested/path/image:tag_1.0"),
        ("mirror.example.com:8443/tensorflow/serving:2.19.0", "mirror.example.com:8443/tensorflow/serving:2.19.0"),
        ("busybox:Latest_V1", "docker.io/library/busybox:Latest_V1"),  # tags may have capitals
        ("a_b/c--d/e.f__g:x", "docker.io/a_b/c--d/e.f__g:x"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"gcr.io/p/image:v1@{DIGEST}", f"gcr.io/p/image:v1@{DIGEST}"),
        (f"localhost:5000/p/image@{DIGEST}", f"localhost:5000/p/image@{DIGEST}"),
    ],
)
def test_references_normalize_as_the_docker_cli_does(text, normalized):
    assert str(ImageRef.parse(text)) == normalized


@pytest.mark.parametrize(
    "text",
    [
        "",
        "docker.io/Tensorflow/serving",  # upper case in the path
        "gcr.io/p/Image",
        "gcr.io//image",  # empty parts
        "/image",
        "gcr.io/",
        "gcr.io/p/image/",
        "image:",
        "image:-bad",
        "image:.bad",
        "image:v1\n",
        "image:vé",
        "gcr.io/p/image:" + "t" * 129,
        "image:a:b",
        "image@",
        "image@sha256:short",
        "image@sha256:" + "A" * 64,
        "image@md5:" + "0" * 32,
        "image:v1@",
        "a..b/image",
        "a-/image",
        "bad host/p/image",
        "bad_host.io/p/image",
        "0123456789abcdef" * 4,  # an image id
        "gcr.io/" + "a/" * 130 + "a",  # over docker's 255 characters
    ],
)
def test_malformed_references_are_invalid_argument(text):
    with pytest.raises(ExportError) as raised:
        ImageRef.parse(text)
    assert raised.value.code is Code.INVALID_ARGUMENT and repr(text) in raised.value.message


def test_a_digest_is_what_the_registry_is_asked_for():
    both = ImageRef.parse(f"gcr.io/p/image:v1@{DIGEST}")
    assert (both.tag, both.digest, both.reference) == ("v1", DIGEST, DIGEST)
    alone = ImageRef.parse(f"busybox@{DIGEST}")
    assert (alone.registry, alone.repository, alone.tag, alone.reference) == (
        "docker.io",
        "library/busybox",
        "latest",
        DIGEST,
    )
    tagged = ImageRef.parse("tensorflow/serving:2.19.0")
    assert (tagged.registry, tagged.repository, tagged.tag, tagged.digest, tagged.reference) == (
        "docker.io",
        "tensorflow/serving",
        "2.19.0",
        None,
        "2.19.0",
    )


def test_docker_hub_is_served_from_its_registry_endpoint():
    assert RegistryClient("docker.io").base == f"https://{DOCKER_HUB_ENDPOINT}" == "https://registry-1.docker.io"
    assert RegistryClient(ImageRef.parse("tensorflow/serving:2.19.0").registry).base == "https://registry-1.docker.io"
    assert RegistryClient("gcr.io").base == "https://gcr.io"
    assert RegistryClient("127.0.0.1:5000").base == "http://127.0.0.1:5000"
    assert RegistryClient("[::1]:5000").base == "http://[::1]:5000"


def test_docker_login_credentials_for_docker_hub(tmp_path, monkeypatch):
    auth = base64.b64encode(b"someone:secret").decode()
    other = base64.b64encode(b"me:gcr-secret").decode()
    config = {"auths": {"https://index.docker.io/v1/": {"auth": auth}, "gcr.io": {"auth": other}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_credentials("docker.io") == ("someone", "secret")
    assert RegistryClient("docker.io").credentials == ("someone", "secret")
    assert docker_config_credentials("gcr.io") == ("me", "gcr-secret")
    assert docker_config_credentials("quay.io") is None


def test_unreachable_docker_hub_is_unavailable_naming_it_and_the_settings():
    """No internet here: the real request to Docker Hub fails, and says what to do instead."""
    started = time.monotonic()
    with pytest.raises(ExportError) as raised:
        RegistryClient("docker.io", retries=1).manifest("tensorflow/serving", "2.19.0")
    assert raised.value.code is Code.UNAVAILABLE
    message = raised.value.message
    assert DOCKER_HUB_ENDPOINT in message
    assert "EXPORTER_SERVING_BASE_CPU" in message and "EXPORTER_SERVING_BASE_GPU" in message
    assert time.monotonic() - started < 15  # one try, bounded by the connect timeout


def test_another_unreachable_registry_is_unavailable_naming_it():
    """Port 1 on loopback: nothing listens there, so the connection is refused."""
    with pytest.raises(ExportError) as raised:
        RegistryClient("127.0.0.1:1", retries=1).manifest("p/image", "v1")
    assert raised.value.code is Code.UNAVAILABLE
    assert "127.0.0.1:1" in raised.value.message and "EXPORTER_SERVING_BASE" not in raised.value.message
