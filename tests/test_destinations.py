"""Destinations are chosen from the request's destination, by URI scheme for folders."""

from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError
from exporter.core.platforms import PLATFORMS, ServingPlatform, serving_platform
from exporter.core.request import parse_output_config
from exporter.destinations import GcsDestination, LocalDestination, RegistryDestination, open_destination


def folder_request(prefix: str):
    return parse_output_config({"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": prefix}})


def image_request(uri: str, **params: str):
    return parse_output_config({"modelFormat": "docker", "gcrDestination": {"outputUri": uri}, "params": params})


@pytest.mark.parametrize(
    "prefix, kind",
    [
        ("gs://bucket/exports", GcsDestination),
        ("file:///srv/exports", LocalDestination),
        ("/srv/exports", LocalDestination),
        ("relative/exports", LocalDestination),
    ],
)
def test_a_folder_prefix_picks_its_destination_by_scheme(prefix, kind):
    assert type(open_destination(folder_request(prefix))) is kind


def test_file_uris_and_paths_name_the_same_folder():
    assert open_destination(folder_request("file:///srv/a%20b")).uri == str(Path("/srv/a b"))


def test_an_image_uri_is_the_registry_destination_for_its_platform():
    destination = open_destination(image_request("registry.example.com/p/digits:v1", gpu_architecture="nvidia"))
    assert type(destination) is RegistryDestination
    assert destination.platform == serving_platform("x86_64", "nvidia")
    assert destination.platform.platform == "linux/amd64"
    assert str(destination.target) == "registry.example.com/p/digits:v1"


def test_an_option_a_destination_does_not_take_is_invalid_argument(tmp_path):
    with pytest.raises(ExportError) as raised:
        open_destination(folder_request(str(tmp_path)), keep_context=tmp_path / "context")
    assert raised.value.code is Code.INVALID_ARGUMENT and "keep_context" in raised.value.message


def test_the_base_image_is_a_setting_with_a_docker_hub_default(monkeypatch):
    cpu = serving_platform("x86_64", "none")
    monkeypatch.delenv(cpu.base_setting, raising=False)
    assert cpu.base_image == "tensorflow/serving:2.19.0"
    monkeypatch.setenv(cpu.base_setting, "mirror.example.com/tf/serving:2.19.0")
    assert cpu.base_image == "mirror.example.com/tf/serving:2.19.0"


def test_platform_lookups_read_the_table(monkeypatch):
    """The lookups hold no list of their own: a row added to the table is found by each."""
    import exporter.core.platforms as platforms

    arm = ServingPlatform("arm64", "none", "linux", "arm64", "EXPORTER_SERVING_BASE_ARM64", "example/serving:1")
    monkeypatch.setattr(platforms, "PLATFORMS", (*PLATFORMS, arm))
    assert platforms.serving_platform("arm64", "none") is arm
    assert "arm64" in platforms.cpu_architectures()
    assert platforms.platform_combinations({"cpu_architecture": "arm64", "gpu_architecture": "nvidia"})
