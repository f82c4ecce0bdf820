"""The formats table and the converter registry describe the same formats."""

import pytest

from converters import FORMATS, REGISTRY
from exporter.core.formats import AUTOML_FORMAT_NAMES, DEFAULT_FORMAT, FORMAT_NAMES

AUTOML_FORMATS = {"tflite", "edgetpu_tflite", "tf_saved_model", "tf_js", "core_ml", "docker"}
EXTENSIONS = {"onnx", "openvino"}


def test_every_row_has_a_converter_and_every_converter_a_row():
    assert set(AUTOML_FORMAT_NAMES) == AUTOML_FORMATS  # AutoML's modelFormat values, unchanged
    assert set(FORMAT_NAMES) == AUTOML_FORMATS | EXTENSIONS
    assert set(REGISTRY) == set(FORMAT_NAMES)
    for name, converter in REGISTRY.items():
        assert converter.row.name == name


def test_row_names_are_unique_and_default_is_a_row():
    assert len(FORMAT_NAMES) == len(set(FORMAT_NAMES))
    assert DEFAULT_FORMAT in FORMAT_NAMES


@pytest.mark.parametrize("row", FORMATS, ids=lambda r: r.name)
def test_every_default_is_an_accepted_value(row):
    for param in row.params:
        assert param.problem(param.default) is None, (row.name, param.name)
    if row.builds_on is not None:
        assert row.builds_on in FORMAT_NAMES


@pytest.mark.parametrize("row", [r for r in FORMATS if r.builds_on], ids=lambda r: r.name)
def test_a_format_that_builds_on_another_reaches_its_converter(row):
    assert REGISTRY[row.name].foundation is REGISTRY[row.builds_on]


def test_a_format_that_builds_on_nothing_has_no_foundation():
    with pytest.raises(TypeError):
        REGISTRY["tflite"].foundation  # noqa: B018


def test_docker_architectures_come_from_the_platforms_table():
    from exporter.core.formats import format_row
    from exporter.core.platforms import PLATFORMS

    docker = format_row("docker")
    assert set(docker.param("cpu_architecture").allowed) == {p.cpu_architecture for p in PLATFORMS}
    assert set(docker.param("gpu_architecture").allowed) == {p.gpu_architecture for p in PLATFORMS}
    for platform in PLATFORMS:
        params = docker.with_defaults(
            {"cpu_architecture": platform.cpu_architecture, "gpu_architecture": platform.gpu_architecture}
        )
        assert docker.validate(params) == []
