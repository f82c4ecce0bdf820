"""The formats table and the converter registry describe the same formats."""
import pytest

from converters import FORMATS, REGISTRY
from converters.formats import DEFAULT_FORMAT, FORMAT_NAMES

AUTOML_FORMATS = {"tflite", "edgetpu_tflite", "tf_saved_model", "tf_js", "core_ml", "docker"}


def test_every_row_has_a_converter_and_every_converter_a_row():
    assert set(FORMAT_NAMES) == AUTOML_FORMATS
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
