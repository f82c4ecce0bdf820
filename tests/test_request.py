"""The request contract of models.export (AutoML v1beta1), rule by rule."""

import pytest

from exporter.core.errors import Code, ExportError
from exporter.core.request import parse_export_body, parse_output_config


def gcs(prefix="gs://bucket/dir", **extra):
    return {"gcsDestination": {"outputUriPrefix": prefix}, **extra}


def violations(data, parse=parse_output_config):
    with pytest.raises(ExportError) as raised:
        parse(data)
    assert raised.value.code is Code.INVALID_ARGUMENT
    return {v.field: v.description for v in raised.value.violations}


def test_empty_format_means_tflite_with_defaults():
    request = parse_output_config(gcs())
    assert request.model_format == "tflite"
    assert request.params == {
        "quantization": "uint8",
        "calibration_count": "100",
        "max_disagreement": "auto",
        "quantization_remedies": "all",
        "output_scores": "probabilities",
    }
    assert request.destination == "gs://bucket/dir"


def test_snake_case_names_are_accepted_like_camel_case():
    request = parse_export_body(
        {
            "output_config": {
                "model_format": "tflite",
                "gcs_destination": {"output_uri_prefix": "/tmp/x"},
                "params": {"quantization": "float32"},
            }
        }
    )
    assert request.params["quantization"] == "float32"
    assert request.destination == "/tmp/x"


def test_output_config_is_required():
    assert violations({}, parse_export_body) == {"outputConfig": "is required"}


@pytest.mark.parametrize(
    "data,field",
    [
        ({"outputConfig": gcs(), "extra": 1}, "extra"),
        ({"outputConfig": gcs(colour="red")}, "outputConfig.colour"),
        (
            {"outputConfig": {"gcsDestination": {"outputUriPrefix": "/x", "bucket": "b"}}},
            "outputConfig.gcsDestination.bucket",
        ),
    ],
)
def test_unknown_fields_are_refused_by_name(data, field):
    assert violations(data, parse_export_body)[field] == "unknown field"


def test_unknown_format_lists_the_allowed_ones():
    found = violations(gcs(modelFormat="caffe"))
    assert "caffe" in found["outputConfig.modelFormat"]
    assert (
        "tflite, edgetpu_tflite, tf_saved_model, tf_js, core_ml, docker, onnx, openvino"
        in found["outputConfig.modelFormat"]
    )


def test_destination_union_needs_exactly_one():
    assert "exactly one" in violations({"modelFormat": "tflite"})["outputConfig"]
    both = {**gcs(), "gcrDestination": {"outputUri": "gcr.io/p/i"}}
    assert "not both" in violations(both)["outputConfig"]


@pytest.mark.parametrize("fmt", ["tflite", "edgetpu_tflite", "tf_saved_model", "tf_js", "core_ml", "onnx", "openvino"])
def test_file_formats_refuse_a_registry_destination(fmt):
    found = violations({"modelFormat": fmt, "gcrDestination": {"outputUri": "gcr.io/p/i"}})
    assert "takes gcsDestination" in found["outputConfig.gcrDestination"]


def test_docker_refuses_a_folder_destination():
    found = violations(gcs(modelFormat="docker"))
    assert "takes gcrDestination" in found["outputConfig.gcsDestination"]


def test_docker_params_defaults_and_values():
    request = parse_output_config({"modelFormat": "docker", "gcrDestination": {"outputUri": "gcr.io/p/i:v1"}})
    assert request.params == {"cpu_architecture": "x86_64", "gpu_architecture": "none", "builder": "auto"}
    request = parse_output_config(
        {
            "modelFormat": "docker",
            "gcrDestination": {"outputUri": "localhost:5000/p/i"},
            "params": {"gpu_architecture": "nvidia"},
        }
    )
    assert request.params["gpu_architecture"] == "nvidia"
    found = violations(
        {
            "modelFormat": "docker",
            "gcrDestination": {"outputUri": "gcr.io/p/i"},
            "params": {"cpu_architecture": "arm64", "gpu_architecture": "amd"},
        }
    )
    assert "allowed values: x86_64" in found["outputConfig.params.cpu_architecture"]
    assert "allowed values: none, nvidia" in found["outputConfig.params.gpu_architecture"]


@pytest.mark.parametrize(
    "uri,ok",
    [
        ("gcr.io/my-project/my-image", True),
        ("gcr.io/my-project/my-image:v1.2", True),
        ("localhost:5000/project/image:latest", True),
        ("us-docker.pkg.dev/project/repo/image", True),
        ("gcr.io/my-image", False),
        ("gcr.io/Project/Image", False),
        ("gcr.io/p/i:", False),
        ("https://gcr.io/p/i", False),
        ("", False),
    ],
)
def test_image_uri_forms(uri, ok):
    config = {"modelFormat": "docker", "gcrDestination": {"outputUri": uri}}
    if ok:
        assert parse_output_config(config).destination == uri
    else:
        assert "outputConfig.gcrDestination.outputUri" in violations(config)


@pytest.mark.parametrize(
    "prefix,ok",
    [
        ("gs://bucket", True),
        ("gs://my-bucket/some/dir", True),
        ("file:///abs/dir", True),
        ("relative/dir", True),
        ("/abs/dir", True),
        ("gs://", False),
        ("gs://B!/x", False),
        ("file://relative", False),
        ("s3://bucket/x", False),
        ("", False),
    ],
)
def test_output_uri_prefix_forms(prefix, ok):
    if ok:
        assert parse_output_config(gcs(prefix)).destination == prefix
    else:
        assert "outputConfig.gcsDestination.outputUriPrefix" in violations(gcs(prefix))


def test_uri_limit_is_2000_characters():
    assert parse_output_config(gcs("gs://bucket/" + "a" * (2000 - 12))).destination
    found = violations(gcs("gs://bucket/" + "a" * 2000))
    assert found["outputConfig.gcsDestination.outputUriPrefix"] == "longer than 2000 characters"
    found = violations({"modelFormat": "docker", "gcrDestination": {"outputUri": "a" * 2001}})
    assert found["outputConfig.gcrDestination.outputUri"] == "longer than 2000 characters"


def test_param_strings_are_limited_to_25000_characters():
    found = violations(gcs(params={"quantization": "u" * 25001}))
    assert found["outputConfig.params.quantization"] == "longer than 25000 characters"


def test_unknown_param_key_and_value_name_what_is_allowed():
    found = violations(gcs(params={"colour": "red", "quantization": "int4", "calibration_count": "0"}))
    assert "allowed keys: quantization, calibration_count" in found["outputConfig.params.colour"]
    assert "allowed values: uint8, int8, float16, dynamic_range, float32" in found["outputConfig.params.quantization"]
    assert "integer from 1 to 10000" in found["outputConfig.params.calibration_count"]


def test_params_must_be_strings():
    found = violations(gcs(params={"calibration_count": 5}))
    assert found["outputConfig.params.calibration_count"] == "must be a string"


def test_status_json_carries_a_bad_request_detail():
    with pytest.raises(ExportError) as raised:
        parse_output_config(gcs(params={"quantization": "int4"}))
    status = raised.value.to_status()
    assert status["code"] == 3
    (detail,) = status["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == "outputConfig.params.quantization"
    assert raised.value.code.http_status == 400


def test_non_object_bodies_are_invalid_not_crashes():
    for body in (None, [], "text", 3):
        with pytest.raises(ExportError) as raised:
            parse_export_body(body)
        assert raised.value.code is Code.INVALID_ARGUMENT
