"""Serving signatures beyond one float32 input and one output, as users' models have them: uint8
pixels in (the usual TF Hub and Keras form, a Cast in the graph), and several outputs of which one
holds the class scores. Each is exported and verified in every format's own runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError
from exporter.core.model_source import read_model
from exporter.run import export_model


def uint8_multi_output_model(canary: Path, folder: Path) -> Path:
    """The colour canary behind a signature that takes uint8 pixels and returns, besides the class
    probabilities, the top class index and a 3-wide embedding (neither as wide as the labels)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(canary / "saved_model"))
    classify = loaded.signatures["serving_default"]

    class Uint8Classifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.classifier = loaded  # tracked: its variables are saved with this module

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="pixels")])
        def serve(self, pixels):
            scaled = tf.cast(pixels, tf.float32) / 255.0  # the canary takes 0..1
            probabilities = classify(image=scaled)["probabilities"]
            return {
                "probabilities": probabilities,
                "top_class": tf.argmax(probabilities, axis=1),
                "embedding": tf.reduce_mean(scaled, axis=[1, 2]),
            }

    module = Uint8Classifier()
    tf.saved_model.save(module, str(folder / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary / "dict.txt", folder / "dict.txt")
    shutil.copytree(canary / "images", folder / "images")
    return folder


@pytest.fixture(scope="module")
def uint8_model(canary_model, tmp_path_factory) -> Path:
    return uint8_multi_output_model(canary_model, tmp_path_factory.mktemp("uint8") / "uint8_canary")


def test_the_signature_is_read_as_it_is(uint8_model):
    source = read_model(uint8_model)
    assert (source.input_key, source.input_dtype) == ("pixels", "uint8")
    assert (source.output_key, source.output_count) == ("probabilities", 3)
    assert source.output_chosen_by == "the only output as wide as the 6 labels"
    assert (source.mean, source.std) == ((0.0,) * 3, (1.0,) * 3)


@pytest.mark.parametrize(
    "model_format,params",
    [
        ("tflite", {"quantization": "float32"}),
        ("tflite", {"quantization": "uint8"}),
        ("tf_saved_model", {}),
        ("tf_js", {}),
        ("core_ml", {}),
    ],
)
def test_a_uint8_input_with_several_outputs_exports_verified(uint8_model, tmp_path, model_format, params):
    result = export_model(
        uint8_model,
        {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(tmp_path)}, "params": params},
    )
    model = result.report["model"]
    assert model["input"]["dtype"] == "uint8" and model["output"]["outputs"] == 3
    checks = result.report["checks"]
    assert checks, result.report
    for check in checks.values():
        if "decided" in check:  # a score comparison (not a spec check)
            assert check["decided"] > 0 and check["passed"], check
            assert check["source_accuracy"] == 1.0, check


# --- Keras files and labels given apart ------------------------------------------------------


def train_keras_classifier(canary: Path):
    """A small Keras classifier of the canary's colours, trained here in seconds, with augmentation
    layers inside it (as TensorFlow's tutorial builds models): the inference function leaves them off."""
    import keras
    import numpy as np

    from exporter.core.images import load_image_set

    labels = tuple((canary / "dict.txt").read_text().split())
    images = load_image_set(canary / "images" / "calibration", labels, 32, 32, purpose="training")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(8, 1, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(len(labels), activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images.pixels.astype(np.float32), images.labels, epochs=60, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_files(canary_model, tmp_path_factory) -> dict[str, Path]:
    import keras

    folder = tmp_path_factory.mktemp("keras-files")
    model = train_keras_classifier(canary_model)
    files = {"keras": folder / "colour model.keras", "h5": folder / "colour_model.h5"}
    model.save(files["keras"])
    model.save(files["h5"])
    keras.backend.clear_session()
    return files


@pytest.mark.parametrize("kind,quantization", [("keras", "float32"), ("h5", "uint8")])
def test_a_keras_file_exports_verified(keras_files, canary_model, tmp_path, kind, quantization):
    result = export_model(
        keras_files[kind],
        {
            "modelFormat": "tflite",
            "gcsDestination": {"outputUriPrefix": str(tmp_path)},
            "params": {"quantization": quantization},
        },
        labels=canary_model / "dict.txt",
        images=canary_model / "images",
    )
    model = result.report["model"]
    assert model["convertedFrom"].startswith(keras_files[kind].name + " (Keras 3.")
    assert model["displayName"] == keras_files[kind].stem.replace(" ", "_")
    check = result.report["checks"]["verification"]
    assert check["decided"] > 0 and check["passed"] and check["source_accuracy"] >= 0.9, check


def test_a_keras_file_needs_labels_and_images(keras_files, canary_model, tmp_path):
    config = {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(tmp_path)}}
    with pytest.raises(ExportError) as raised:
        export_model(keras_files["keras"], config, images=canary_model / "images")
    assert raised.value.code is Code.INVALID_ARGUMENT and "pass --labels FILE" in raised.value.message
    with pytest.raises(ExportError) as raised:
        export_model(keras_files["keras"], config, labels=canary_model / "dict.txt")
    assert raised.value.code is Code.FAILED_PRECONDITION and "pass --images DIR" in raised.value.message


def test_a_keras_file_with_python_code_is_refused_unrun(tmp_path, canary_model):
    """A Lambda layer carries Python bytecode: Keras's safe mode refuses to load it, so it never runs."""
    import keras

    marker = tmp_path / "ran.txt"
    inputs = keras.Input((32, 32, 3))
    # The file's path is in the lambda's own code (a closure would not serialize).
    writes_a_file = eval(f"lambda x: x * 0 + float(len(open({str(marker)!r}, 'w').name))")  # noqa: S307
    outputs = keras.layers.Lambda(writes_a_file)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(6, activation="softmax")(keras.layers.Flatten()(outputs)))
    marker.unlink(missing_ok=True)
    model.save(tmp_path / "lambda.keras")
    marker.unlink(missing_ok=True)
    keras.backend.clear_session()
    with pytest.raises(ExportError) as raised:
        export_model(
            tmp_path / "lambda.keras",
            {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(tmp_path / "out")}},
            labels=canary_model / "dict.txt",
            images=canary_model / "images",
        )
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert raised.value.message.startswith("lambda.keras is not a Keras model Keras can load safely")
    assert not marker.exists()


def test_labels_from_a_file_for_a_bare_saved_model(canary_model, tmp_path):
    folder = tmp_path / "bare_model"
    shutil.copytree(canary_model / "saved_model", folder)
    result = export_model(
        folder,
        {
            "modelFormat": "tflite",
            "gcsDestination": {"outputUriPrefix": str(tmp_path / "out")},
            "params": {"quantization": "float32"},
        },
        labels=canary_model / "dict.txt",
        images=canary_model / "images",
        input_size=(32, 32),
    )
    assert result.report["model"]["labels"] == (canary_model / "dict.txt").read_text().split()


# --- AutoML's image_bytes serving models: the round trip ------------------------------------


@pytest.fixture(scope="module")
def serving_export(canary_model, tmp_path_factory) -> Path:
    """The canary exported as a serving SavedModel (image_bytes + key in, scores, labels, key out),
    the form of AutoML's tf_saved_model and docker exports: no dict.txt, no images beside it."""
    out = tmp_path_factory.mktemp("serving")
    return Path(
        export_model(
            canary_model, {"modelFormat": "tf_saved_model", "gcsDestination": {"outputUriPrefix": str(out)}}
        ).output_dir
    )


@pytest.mark.parametrize(
    "model_format,params",
    [
        ("tflite", {"quantization": "float32"}),
        ("tflite", {"quantization": "uint8"}),
        ("tf_js", {}),
        ("tf_saved_model", {}),
        ("core_ml", {}),
    ],
)
def test_an_image_bytes_serving_model_exports_again(serving_export, canary_model, tmp_path, model_format, params):
    result = export_model(
        serving_export,
        {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(tmp_path)}, "params": params},
        images=canary_model / "images",
    )
    model = result.report["model"]
    assert model["displayName"] == "colour_canary"  # from the export's own report
    assert model["labels"] == (canary_model / "dict.txt").read_text().split()  # from its labels output
    assert model["convertedFrom"].endswith("(image_bytes serving model)")
    assert model["input"]["shape"] == [None, 32, 32, 3] and model["input"]["mean"] == [0.0, 0.0, 0.0]
    for check in result.report["checks"].values():
        if "decided" in check:
            assert check["passed"] and check["decided"] > 0 and check["source_accuracy"] == 1.0, check


def test_an_image_bytes_model_is_op_checked_before_it_loads(serving_export, canary_model, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    folder = tmp_path / "hostile"
    shutil.copytree(serving_export, folder)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    function = next(
        f
        for f in saved.meta_graphs[0].graph_def.library.function
        if any(n.op == "DecodeImage" for n in f.node_def) or any(n.op == "Softmax" for n in f.node_def)
    )
    next(n for n in function.node_def if n.op in ("DecodeImage", "Softmax")).op = "WriteFile"
    (folder / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ExportError) as raised:
        export_model(
            folder,
            {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(tmp_path / "out")}},
            images=canary_model / "images",
        )
    assert (
        raised.value.code is Code.FAILED_PRECONDITION
        and "WriteFile, which reads or writes files" in raised.value.message
    )


# --- operations a runtime lacks: exact GELU's Erfc -------------------------------------------


@pytest.fixture(scope="module")
def exact_gelu_model(canary_model, tmp_path_factory) -> Path:
    """A Keras classifier of the canary's colours with a grouped convolution and an exact-GELU layer
    (XLA-compiled functions and Erfc in its graph, as ConvNeXt has), trained here in seconds."""
    import keras
    import numpy as np

    from exporter.core.images import load_image_set

    labels = tuple((canary_model / "dict.txt").read_text().split())
    images = load_image_set(canary_model / "images" / "calibration", labels, 32, 32, purpose="training")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    # A grouped convolution (ConvNeXt's depthwise one): Keras compiles it with XLA, and its filter
    # takes one input channel of each group.
    x = keras.layers.Conv2D(6, 3, padding="same", groups=3)(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation=lambda t: keras.activations.gelu(t, approximate=False))(x)
    model = keras.Model(inputs, keras.layers.Dense(len(labels), activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images.pixels.astype(np.float32), images.labels, epochs=80, verbose=0)
    folder = tmp_path_factory.mktemp("gelu") / "exact_gelu"
    model.export(str(folder / "saved_model"), verbose=False)
    keras.backend.clear_session()
    shutil.copy(canary_model / "dict.txt", folder / "dict.txt")
    shutil.copytree(canary_model / "images", folder / "images")
    return folder


@pytest.mark.parametrize("model_format", ["tf_js", "core_ml"])
def test_convnext_layers_convert_where_the_runtime_lacks_their_ops(exact_gelu_model, tmp_path, model_format):
    from converters.graph_rewrites import needs_rewrite
    from exporter.core.op_policy import saved_model_op_uses
    from exporter.core.saved_model_proto import read_meta_graphs

    assert "Erfc" in {use.op for use in saved_model_op_uses(exact_gelu_model / "saved_model")}
    functions = read_meta_graphs(exact_gelu_model / "saved_model")[0].graph_def.library.function
    assert any("_XlaMustCompile" in function.attr for function in functions)
    assert needs_rewrite(exact_gelu_model / "saved_model")
    result = export_model(
        exact_gelu_model, {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(tmp_path)}}
    )
    checks = result.report["checks"]
    if model_format == "tf_js":
        assert checks["verification"]["passed"] and checks["verification"]["decided"] > 0, checks
        assert checks["verification"]["agreeing"] == checks["verification"]["decided"]
    else:
        assert checks["spec"], checks  # Core ML: the spec; the rewritten graph was checked in TensorFlow
