"""The Python API a notebook uses: exporter.export(...) with a typed result, quiet, same errors."""

import subprocess
import sys

import pytest

import exporter
from exporter import Code, ExportError


def test_the_package_lists_what_it_offers():
    assert {"export", "verify", "Export", "export_model", "ExportError", "Code"} <= set(dir(exporter))
    assert set(exporter.__all__) == set(dir(exporter))
    with pytest.raises(AttributeError):
        exporter.no_such_thing  # noqa: B018


def test_export_returns_a_typed_result(canary_model, tmp_path):
    result = exporter.export(canary_model, "tflite", output=tmp_path, quantization="float32")
    assert isinstance(result, exporter.Export)
    assert result.format == "tflite" and result.params["quantization"] == "float32"
    assert result.folder.startswith(str(tmp_path)) and "model.tflite" in [p.name for p in result.artifacts]
    assert all(path.is_file() for path in result.artifacts)
    assert result.agreement == 1.0
    assert result.accuracy == result.source_accuracy and result.accuracy is not None
    assert set(result.seconds) == {"load", "convert", "verify", "publish"}
    assert result.checks["verification"]["passed"]
    checks = exporter.verify(result.folder, canary_model)
    assert checks["verification"]["agreeing"] == checks["verification"]["decided"]


@pytest.mark.parametrize(
    "arguments,named",
    [
        ({"format": "caffe"}, "format: 'caffe' is not a model format"),
        ({"quantization": "int4"}, "quantization: "),
        ({"colour": "red"}, "colour: unknown param"),
        ({"output": "gs://UPPER/x"}, "output: 'gs://UPPER/x'"),
    ],
)
def test_errors_name_the_argument(canary_model, tmp_path, arguments, named):
    call = {"format": "tflite", "output": tmp_path / "out", **arguments}
    with pytest.raises(ExportError) as raised:
        exporter.export(canary_model, **call)
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert named in raised.value.message and "outputConfig" not in raised.value.message
    assert not (tmp_path / "out").exists()


def test_a_missing_model_is_not_found(tmp_path):
    with pytest.raises(ExportError) as raised:
        exporter.export(tmp_path / "none", "tflite", output=tmp_path / "out")
    assert raised.value.code is Code.NOT_FOUND and "model" in raised.value.message


@pytest.mark.slow
def test_an_export_from_python_prints_nothing(canary_model, tmp_path):
    """TensorFlow's start-up and conversion logs stay out of a notebook's output unless asked."""
    code = (
        "import exporter; "
        f"r = exporter.export({str(canary_model)!r}, 'tflite', output={str(tmp_path)!r}, quantization='float32'); "
        "print(r.agreement)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1.0\n"
    assert result.stderr == "", result.stderr
