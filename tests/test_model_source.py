"""Reading a model folder: what fits the model folder's rules is read, anything else is one clear error."""

import json
import shutil

import pytest

from exporter.core.errors import Code, ExportError
from exporter.core.model_source import read_model


def tiny_saved_model(
    folder, input_shape, outputs=("probabilities",), width=6, key="serving_default", dtype="float32", widths=None
):
    """A real SavedModel whose serving signature has the given input shape, type and output names
    (each `width` wide, or as `widths` says)."""
    import tensorflow as tf

    widths = widths or {}

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(input_shape, dtype, name="image")])
        def serve(self, image):
            mean = tf.reduce_mean(tf.cast(image, tf.float32), axis=list(range(1, len(input_shape))))[:, None]
            return {name: tf.nn.softmax(tf.tile(mean, [1, widths.get(name, width)])) for name in outputs}

    module = Tiny()
    tf.saved_model.save(module, str(folder), signatures={key: module.serve})


def bad(folder, **kwargs) -> str:
    with pytest.raises(ExportError) as raised:
        read_model(folder, **kwargs)
    return raised.value


def test_reads_the_sample_models(digits_model, canary_model):
    digits = read_model(digits_model)
    assert digits.display_name == "digits_mobilenetv2"
    assert (digits.height, digits.width) == (96, 96)
    assert digits.labels[0] == "zero" and len(digits.labels) == 10
    assert digits.input_range == (0.0, 255.0)
    canary = read_model(canary_model)
    assert canary.input_range == (0.0, 1.0)
    assert canary.labels == ("red", "yellow", "green", "cyan", "blue", "magenta")
    assert canary.input_key == "image" and canary.output_key == "probabilities"


def test_missing_folder_is_not_found(tmp_path):
    error = bad(tmp_path / "nowhere")
    assert error.code is Code.NOT_FOUND and "does not exist" in error.message


def test_folder_without_saved_model(tmp_path):
    (tmp_path / "dict.txt").write_text("a\nb\n")
    error = bad(tmp_path)
    assert error.code is Code.INVALID_ARGUMENT and "no SavedModel" in error.message


def test_corrupt_saved_model_pb(canary_model, model_copy):
    folder = model_copy(canary_model)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"\xff\xff\xff garbage")
    error = bad(folder)
    assert error.code is Code.INVALID_ARGUMENT and "not a readable SavedModel" in error.message


def test_missing_labels(canary_model, model_copy):
    folder = model_copy(canary_model)
    (folder / "dict.txt").unlink()
    assert "no labels" in bad(folder).message


def test_labels_must_match_the_output_width(canary_model, model_copy):
    folder = model_copy(canary_model)
    (folder / "dict.txt").write_text("red\nyellow\ngreen\n")
    message = bad(folder).message
    assert "[batch, 3]" in message and "found 'probabilities': float32 [?, 6]" in message


def test_display_name_follows_automl_rule(canary_model, model_copy):
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("9starts_with_digit", "has-dash", "x" * 33):
        manifest["display_name"] = name
        (folder / "manifest.json").write_text(json.dumps(manifest))
        message = bad(folder).message
        assert name in message and "at most 32 characters of [A-Za-z0-9_]" in message


def test_manifest_schema_errors_name_the_field(canary_model, model_copy):
    folder = model_copy(canary_model)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["range"] = "0..65535"
    manifest["model_type"] = "server"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    message = bad(folder).message
    assert "input.range" in message and "model_type" in message
    (folder / "manifest.json").write_text("{not json")
    assert "not valid JSON" in bad(folder).message


def test_no_serving_signature(tmp_path):
    tiny_saved_model(tmp_path / "saved_model", [None, 8, 8, 3], key="predict")
    (tmp_path / "dict.txt").write_text("\n".join("abcdef"))
    message = bad(tmp_path).message
    assert "no 'serving_default' signature; found: predict" in message


def test_input_must_be_a_4d_rgb_image(tmp_path):
    tiny_saved_model(tmp_path / "saved_model", [None, 8, 8])
    (tmp_path / "dict.txt").write_text("\n".join("abcdef"))
    message = bad(tmp_path).message
    assert "4-D float32 or uint8 NHWC RGB" in message and "[?, 8, 8]" in message


def test_an_input_of_another_type_is_refused_naming_the_allowed_ones(tmp_path):
    tiny_saved_model(tmp_path / "saved_model", [None, 8, 8, 3], dtype="int32")
    (tmp_path / "dict.txt").write_text("\n".join("abcdef"))
    message = bad(tmp_path).message
    assert "4-D float32 or uint8 NHWC RGB" in message and "found 'image': int32 [?, 8, 8, 3]" in message


def test_a_uint8_input_takes_raw_pixels(tmp_path):
    tiny_saved_model(tmp_path / "saved_model", [None, 8, 8, 3], dtype="uint8")
    (tmp_path / "dict.txt").write_text("\n".join("abcdef"))
    source = read_model(tmp_path)
    assert source.input_dtype == "uint8" and not source.plain_signature
    assert (source.mean, source.std) == ((0.0,) * 3, (1.0,) * 3)
    (tmp_path / "manifest.json").write_text(json.dumps({"input": {"range": "-1..1"}}))
    assert "is uint8, which takes raw 0..255 pixels" in bad(tmp_path).message


def test_the_scores_output_is_found_among_several(tmp_path):
    """By width where only one output is as wide as the labels, else by name, else manifest.json."""
    (tmp_path / "dict.txt").write_text("\n".join("abcdef"))
    tiny_saved_model(tmp_path / "saved_model", [None, 8, 8, 3], outputs=("a", "b"), widths={"a": 1})
    source = read_model(tmp_path)
    assert (source.output_key, source.output_count) == ("b", 2)
    assert source.output_chosen_by == "the only output as wide as the 6 labels"

    shutil.rmtree(tmp_path / "saved_model")
    tiny_saved_model(tmp_path / "saved_model", [None, 8, 8, 3], outputs=("logits", "probabilities", "x"))
    source = read_model(tmp_path)
    assert source.output_key == "probabilities" and source.output_chosen_by.startswith("its name")

    shutil.rmtree(tmp_path / "saved_model")
    tiny_saved_model(tmp_path / "saved_model", [None, 8, 8, 3], outputs=("a", "b"))
    message = bad(tmp_path).message
    assert "several outputs of [batch, 6]" in message and "a, b" in message and "manifest.json output" in message
    (tmp_path / "manifest.json").write_text(json.dumps({"output": "b"}))
    source = read_model(tmp_path)
    assert (source.output_key, source.output_chosen_by) == ("b", "manifest.json output")
    (tmp_path / "manifest.json").write_text(json.dumps({"output": "c"}))
    assert "manifest.json output 'c' is not an output of the serving signature" in bad(tmp_path).message


def test_unknown_input_size_needs_to_be_given(tmp_path):
    tiny_saved_model(tmp_path / "saved_model", [None, None, None, 3])
    (tmp_path / "dict.txt").write_text("\n".join("abcdef"))
    (tmp_path / "manifest.json").write_text(json.dumps({"display_name": "tiny"}))
    assert "--input-size HxW" in bad(tmp_path).message
    source = read_model(tmp_path, input_size=(20, 30))
    assert (source.height, source.width) == (20, 30)


def test_given_size_must_agree_with_the_signature(canary_model):
    message = bad(canary_model, input_size=(64, 64)).message
    assert "--input-size says 64x64 but the signature fixes 32x32" in message


def test_bare_saved_model_folder_uses_folder_name_and_defaults(canary_model, tmp_path):
    folder = tmp_path / "bare_model"
    shutil.copytree(canary_model / "saved_model", folder)
    shutil.copy(canary_model / "dict.txt", folder / "dict.txt")
    source = read_model(folder, images=canary_model / "images")
    assert source.display_name == "bare_model"
    assert source.saved_model_dir == folder
    assert source.input_range == (0.0, 255.0)  # the documented default when no manifest says
    assert source.calibration_dir == (canary_model / "images" / "calibration").resolve()
