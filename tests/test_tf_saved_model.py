"""The serving SavedModel: AutoML's signature, the source's answers from image files, TF Serving's
row format and saved_model_cli."""

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.core.images import list_images
from exporter.core.saved_model_proto import read_signatures
from serving_rest import RestError, predict_rows

SAVED_MODEL_CLI = Path(sys.executable).parent / "saved_model_cli"


def serving_signature(folder: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(folder)).signatures["serving_default"]


def test_signature_is_automl_serving_contract(serving_exports):
    folder, _ = serving_exports["digits"]
    assert (folder / "saved_model.pb").is_file() and (folder / "variables").is_dir()
    inputs, outputs = read_signatures(folder)["serving_default"]
    assert inputs == {"image_bytes": ("string", [-1]), "key": ("string", [-1])}
    assert outputs == {"scores": ("float32", [-1, 10]), "labels": ("string", [-1, 10]), "key": ("string", [-1])}


def test_report_has_exact_and_end_to_end_checks(serving_exports):
    for name in ("digits", "canary"):
        checks = serving_exports[name][1]["checks"]
        assert checks["verification"]["agreeing"] == checks["verification"]["decided"]
        assert checks["verification"]["max_abs_diff"] <= 1e-4
        end = checks["endToEnd"]
        assert end["decided"] - end["agreeing"] <= 0.02 * end["decided"]


def test_classifies_original_jpeg_and_png_files_of_other_sizes(serving_exports, canary_model):
    import tensorflow as tf

    folder, _ = serving_exports["canary"]
    files = list_images(canary_model / "images" / "heldout")
    assert {p.suffix for p in files} == {".png", ".jpg"}
    serve = serving_signature(folder)
    result = serve(image_bytes=tf.constant([p.read_bytes() for p in files]), key=tf.constant([p.name for p in files]))
    labels = result["labels"].numpy().astype(str)
    top = labels[np.arange(len(files)), result["scores"].numpy().argmax(1)]
    assert list(top) == [p.parent.name for p in files]
    assert [k.decode() for k in result["key"].numpy()] == [p.name for p in files]


def test_tf_serving_rest_body_gives_automl_predictions(serving_exports, canary_model):
    folder, _ = serving_exports["canary"]
    red, blue = (sorted((canary_model / "images/heldout" / c).glob("*.jpg"))[0] for c in ("red", "blue"))
    body = {
        "instances": [
            {"image_bytes": {"b64": base64.b64encode(red.read_bytes()).decode()}, "key": "1"},
            {"image_bytes": {"b64": base64.b64encode(blue.read_bytes()).decode()}, "key": "2"},
        ]
    }
    response = predict_rows(serving_signature(folder), json.loads(json.dumps(body)))
    json.dumps(response)  # plain JSON, as the server would send it
    first, second = response["predictions"]
    assert set(first) == {"scores", "labels", "key"}
    assert first["key"] == "1" and second["key"] == "2"
    assert first["labels"] == ["red", "yellow", "green", "cyan", "blue", "magenta"]
    assert first["labels"][int(np.argmax(first["scores"]))] == "red"
    assert second["labels"][int(np.argmax(second["scores"]))] == "blue"
    assert abs(sum(first["scores"]) - 1) < 1e-4


# The row-format rules, on the documented examples of TF Serving's REST API (g3doc/api_rest.md).
def toy(fn, **specs):
    import tensorflow as tf

    return tf.function(
        fn, input_signature=[tf.TensorSpec(s, d, name=n) for n, (s, d) in specs.items()]
    ).get_concrete_function()


def test_documented_half_plus_three_example():
    import tensorflow as tf

    signature = toy(lambda x: {"y": x * 0.5 + 3.0}, x=([None], tf.float32))
    assert predict_rows(signature, {"instances": [1.0, 2.0, 5.0]}) == {"predictions": [3.5, 4.0, 5.5]}


def test_several_outputs_are_a_list_of_objects_and_bytes_outputs_b64():
    import tensorflow as tf

    signature = toy(
        lambda tag, signal: {"tag_bytes": tag, "total": tf.reduce_sum(signal, axis=1)},
        tag=([None], tf.string),
        signal=([None, 5], tf.int32),
    )
    body = {
        "instances": [
            {"tag": "foo", "signal": [1, 2, 3, 4, 5]},
            {"tag": {"b64": base64.b64encode(b"bar").decode()}, "signal": [3, 4, 1, 2, 5]},
        ]
    }
    assert predict_rows(signature, body) == {
        "predictions": [
            {"tag_bytes": {"b64": base64.b64encode(b"foo").decode()}, "total": 15},
            {"tag_bytes": {"b64": base64.b64encode(b"bar").decode()}, "total": 15},
        ]
    }


def test_outputs_must_share_the_batch_dimension():
    import tensorflow as tf

    untiled = toy(lambda x: {"scores": x, "labels": tf.constant(["a", "b"])}, x=([None, 2], tf.float32))
    with pytest.raises(RestError, match="inconsistent batch size"):
        predict_rows(untiled, {"instances": [[0.1, 0.9]]})
    scalar = toy(lambda x: {"scores": x, "n": tf.size(x)}, x=([None, 2], tf.float32))
    with pytest.raises(RestError, match="scalar"):
        predict_rows(scalar, {"instances": [[0.1, 0.9]]})


@pytest.mark.slow
def test_saved_model_cli_runs_the_export(serving_exports, canary_model, tmp_path):
    folder, _ = serving_exports["canary"]
    image = sorted((canary_model / "images/heldout/green").glob("*.png"))[0]
    np.save(tmp_path / "images.npy", np.array([image.read_bytes()], dtype=object))
    np.save(tmp_path / "keys.npy", np.array([b"k1"], dtype=object))
    result = subprocess.run(
        [
            str(SAVED_MODEL_CLI),
            "run",
            "--dir",
            str(folder),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image_bytes={tmp_path / 'images.npy'};key={tmp_path / 'keys.npy'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Result for output key key:\n[b'k1']" in out
    scores_text = out.split("Result for output key scores:")[1]
    scores = [float(v) for v in re.findall(r"[-+]?\d*\.\d+(?:e[-+]?\d+)?", scores_text.split("]]")[0])]
    assert len(scores) == 6 and int(np.argmax(scores)) == 2  # green
    assert "b'green'" in out.split("Result for output key labels:")[1]
