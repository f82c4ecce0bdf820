"""The op policy: hostile SavedModels are refused before anything runs; real classifiers pass.

The policy table is made from TensorFlow's op registry (exporter/core/op_policy_build.py), not from
the models here: these tests hold it to every Keras application, to layers no model of this
project uses, and to a hostile corpus, and check that the committed table is what the registry makes.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

from conftest import CACHE
from exporter.core.errors import Code, ExportError
from exporter.core.model_source import read_model
from exporter.core.op_policy import (
    POLICY_FILE,
    check_saved_model_ops,
    load_policy,
    saved_model_op_uses,
)

SIZE = 32  # the smallest input every application below takes; the operations do not depend on it
# Saved for real, each one of the ways below in turn. Every keras.applications classifier's traced
# graph is checked by test_every_keras_application_passes; these add what saving adds (the
# SavedModel's functions and the saver's ops), which a few families show in each way; NASNetMobile,
# DenseNet121 and EfficientNetV2B0 (39 s of building between them in one run) are left to the trace test.
APPLICATIONS = (
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "ResNet50",
)
# How a Keras model becomes a SavedModel: keras.export.ExportArchive (as exporter/sample_models.py
# saves), Keras 3's own model.export ("serve" and "serving_default"), and a tf.Module around the
# model saved with tf.saved_model.save (as the converters save their wrappers).
SAVE_WAYS = ("export_archive", "model_export", "tf_module")


def save_keras(model, folder: Path, way: str) -> None:
    import keras
    import tensorflow as tf

    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="image")
    if way == "export_archive":
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name="serving_default",
            fn=lambda image: {"probabilities": model(image, training=False)},
            input_signature=[spec],
        )
        archive.write_out(str(folder), verbose=False)
    elif way == "model_export":
        model.export(str(folder), verbose=False)
    else:

        class Serving(tf.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            @tf.function(input_signature=[spec])
            def serve(self, image):
                return {"probabilities": self.model(image, training=False)}

        module = Serving()
        tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


def keras_application(name: str, way: str):
    def build(folder: Path) -> None:
        import keras

        model = getattr(keras.applications, name)(input_shape=(SIZE, SIZE, 3), weights=None, classes=10)
        save_keras(model, folder, way)
        keras.backend.clear_session()

    return build


def conv_dense_module(folder: Path) -> None:
    """A plain tf.Module classifier: convolution, dense layer and softmax on its own variables."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(rng.normal(0, 0.1, (3, 3, 3, 8)).astype(np.float32))
            self.bias = tf.Variable(np.zeros(8, np.float32))
            self.dense = tf.Variable(rng.normal(0, 0.1, (8, 6)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="image")])
        def serve(self, image):
            x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(image, self.kernel, 1, "SAME"), self.bias))
            return {"probabilities": tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]) @ self.dense)}

    module = Classifier()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


def keras_layers(folder: Path) -> None:
    """Keras 3's preprocessing and everyday layers and activations in one small classifier."""
    import keras

    inputs = keras.Input((40, 40, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Normalization(mean=[0.5, 0.5, 0.5], variance=[0.25, 0.25, 0.25])(x)
    x = keras.layers.Resizing(36, 36)(x)
    x = keras.layers.CenterCrop(SIZE, SIZE)(x)
    x = keras.layers.Conv2D(8, 3, activation="gelu")(x)
    x = keras.layers.SeparableConv2D(8, 3, activation="elu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LeakyReLU()(x)
    x = keras.layers.Conv2D(8, 3, activation="tanh", padding="same")(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Activation("swish")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    pooled = keras.layers.GlobalMaxPooling2D()(x)
    flat = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(x))
    x = keras.layers.Dense(16, activation="sigmoid")(keras.layers.Concatenate()([pooled, flat]))
    outputs = keras.layers.Dense(6, activation="softmax")(x)
    keras.Model(inputs, outputs).export(str(folder), verbose=False)
    keras.backend.clear_session()


def tf_keras_saved_model(folder: Path) -> None:
    """A Keras 2 (tf_keras) MobileNetV2 saved with model.save: the older SavedModel layout."""
    import tf_keras

    model = tf_keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), weights=None, classes=10)
    model.save(str(folder))
    tf_keras.backend.clear_session()


def engine_test_models(folder: Path) -> None:
    """The operations of the engine's own small test models (tests/test_model_source.py's tiny
    model, test_unconvertible.py's determinant and test_edgetpu.py's ABS), in one classifier."""
    import tensorflow as tf

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="image")])
        def serve(self, image):
            mean = tf.reduce_mean(image, axis=[1, 2, 3])[:, None]
            matrices = tf.reshape(image[:, :2, :2, 0], [-1, 2, 2])
            scores = tf.abs(tf.linalg.det(matrices)[:, None] - 0.5) + mean
            return {"probabilities": tf.nn.softmax(tf.tile(scores, [1, 6]))}

    module = Tiny()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


def attention_layers(folder: Path) -> None:
    """Layers image models use that the zoo did not: uint8 pixels cast in the graph, Resizing,
    Dense on 3-D and 4-D tensors (Tensordot), LayerNormalization, MultiHeadAttention (Einsum,
    BatchMatMulV2), EinsumDense, exact GELU (Erf) and a ConvNeXt-style block."""
    import keras

    inputs = keras.Input((40, 40, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.Resizing(SIZE, SIZE)(x)
    x = keras.layers.DepthwiseConv2D(7, padding="same")(keras.layers.Conv2D(16, 4, strides=4)(x))
    x = keras.layers.Dense(32, activation=keras.activations.gelu)(keras.layers.LayerNormalization()(x))
    x = keras.layers.Dense(16)(x)  # a ConvNeXt pointwise pair: Dense on [batch, 8, 8, channels]
    tokens = keras.layers.Reshape((64, 16))(x)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(tokens, tokens)
    x = keras.layers.LayerNormalization()(tokens + attended)
    x = keras.layers.EinsumDense("btc,cd->btd", output_shape=(None, 16))(x)
    x = keras.layers.Activation(lambda t: keras.activations.gelu(t, approximate=False))(x)
    outputs = keras.layers.Dense(6, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    keras.Model(inputs, outputs).export(str(folder), verbose=False)
    keras.backend.clear_session()


def tutorial_with_augmentation(folder: Path) -> None:
    """TensorFlow's "Image classification" tutorial model: augmentation layers inside the model,
    which Keras 3 leaves active in the function model.export writes."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(0.1),
            keras.layers.RandomZoom(0.1),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.2),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    model.export(str(folder), verbose=False)
    keras.backend.clear_session()


def _builders(every_way: bool) -> dict:
    """Model name -> builder; the tests save each application one way, in turn."""
    builders = {}
    for i, name in enumerate(APPLICATIONS):
        for way in SAVE_WAYS if every_way else (SAVE_WAYS[i % len(SAVE_WAYS)],):
            builders[f"{name}-{way}"] = keras_application(name, way)
    builders.update(
        conv_dense_module=conv_dense_module,
        keras_layers=keras_layers,
        tf_keras_saved_model=tf_keras_saved_model,
        engine_test_models=engine_test_models,
        attention_layers=attention_layers,
    )
    return builders


BUILDERS = _builders(every_way=False)
ALL_BUILDERS = {**BUILDERS, "tutorial_with_augmentation": tutorial_with_augmentation}


def _building_hash() -> str:
    code = "".join(
        inspect.getsource(f)
        for f in (
            save_keras,
            keras_application,
            conv_dense_module,
            keras_layers,
            tf_keras_saved_model,
            engine_test_models,
            attention_layers,
            tutorial_with_augmentation,
        )
    )
    versions = "-".join(metadata.version(d) for d in ("tensorflow", "keras", "tf-keras"))
    return hashlib.sha256(f"{code}{SIZE}{versions}".encode()).hexdigest()[:16]


def built(name: str, builders: dict = BUILDERS) -> Path:
    """The model's saved_model.pb (all the check reads), built once and cached like the sample models."""
    folder = CACHE / f"op-policy-{_building_hash()}" / name
    if not (folder / "saved_model.pb").exists():
        with tempfile.TemporaryDirectory() as work:
            builders[name](Path(work) / "saved_model")
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".saved_model.pb.{os.getpid()}"
            shutil.copyfile(Path(work) / "saved_model" / "saved_model.pb", partial)
            os.replace(partial, folder / "saved_model.pb")
    return folder


# --- real classifiers pass -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_real_classifiers_pass(name):
    check_saved_model_ops(built(name))


def test_sample_models_pass(canary_model, digits_model):
    for model in (canary_model, digits_model):
        check_saved_model_ops(model / "saved_model")
        read_model(model)


# The smallest input each application takes (32 for the others).
APPLICATION_MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


# Traces the named applications in its own process and prints [names traced, {name: refusal}] as JSON. Tracing is
# single-threaded Python, so the applications are split between two such processes.
TRACE_APPLICATIONS = """
import json, sys
import keras
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from exporter.core.errors import ExportError
from exporter.core.op_policy import check_meta_graphs

sizes, traced, refused = json.loads(sys.argv[1]), [], {}
for name, size in sizes.items():
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=10)
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="image")
    serve = tf.function(lambda image, model=model: {"probabilities": model(image, training=False)})
    meta_graph = meta_graph_pb2.MetaGraphDef()
    meta_graph.graph_def.CopyFrom(serve.get_concrete_function(spec).graph.as_graph_def())
    try:
        check_meta_graphs([meta_graph])
    except ExportError as error:
        refused[name] = error.message
    traced.append(name)
    keras.backend.clear_session()
print(json.dumps([traced, refused]))
"""


def test_every_keras_application_passes():
    """Every classifier keras.applications has, untrained at its smallest input: the serving
    function's graph as tf.function traces it (what a SavedModel saves), without writing weights."""
    import json
    import subprocess
    import sys

    import keras

    names = [n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n))]
    assert len(names) >= 40, names
    sizes = {name: APPLICATION_MIN_SIZE.get(name, SIZE) for name in names}
    halves = [dict(list(sizes.items())[start::2]) for start in (0, 1)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", TRACE_APPLICATIONS, json.dumps(half)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=POLICY_FILE.parents[3],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        for half in halves
    ]
    traced, refused = [], {}
    for run in runs:
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-3000:]
        names_traced, refusals = json.loads(out.strip().splitlines()[-1])
        traced += names_traced
        refused.update(refusals)
    assert sorted(traced) == sorted(names)  # every application traced, none lost between the processes
    assert not refused, refused


def test_the_committed_table_is_what_the_registry_makes():
    """Built in a process that imports TensorFlow alone, as `make op-policy` does: libraries other
    tests load (TensorFlow Decision Forests, through tensorflowjs) register operations of their own
    in this one, which the table leaves to the refusal of unknown operations."""
    import subprocess
    import sys

    build = "import sys; from exporter.core.op_policy_build import build, render; sys.stdout.write(render(build()))"
    done = subprocess.run(
        [sys.executable, "-c", build],
        capture_output=True,
        text=True,
        check=True,
        cwd=POLICY_FILE.parents[3],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert POLICY_FILE.read_text() == done.stdout, "regenerate it: make op-policy"


def test_operations_of_everyday_layers_are_allowed_by_what_they_do():
    """The operations ordinary layers lower to, whatever model uses them, and ones no model here uses."""
    policy = load_policy()
    for op in (
        "GatherV2",
        "Prod",
        "Transpose",
        "Einsum",
        "BatchMatMulV2",
        "Cast",
        "Erf",
        "ResizeBilinear",
        "ResizeBicubic",
        "DecodeJpeg",
        "DecodePng",
        "ExtractImagePatches",
        "TopKV2",
        "ScatterNd",
        "StatelessWhile",
        "If",
        "StringJoin",
        "Cholesky",
        "FFT2D",
        "HashTableV2",
        "LookupTableFindV2",
        "Assert",
        "AssignVariableOp",
    ):
        assert policy.allows(op, in_saver=False), (op, policy.decision(op))


def test_what_touches_the_world_is_refused_everywhere():
    policy = load_policy()
    for op in (
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "PyFunc",
        "EagerPyFunc",
        "PyFuncStateless",
        "TFRecordDataset",
        "TextLineDataset",
        "FixedLengthRecordReaderV2",
        "ImmutableConst",
        "PrintV2",
        "DebugIdentityV2",
        "RemoteCall",
        "CollectiveReduceV2",
        "WriteSummary",
        "DatasetToTFRecord",
        "InitializeTableFromTextFileV2",
        "Save",
        "RestoreSlice",
        "GeneratorDataset",
        "_Send",
        "Timestamp",
        "Empty",
        "FIFOQueueV2",
        "AssignAddVariableOp",
        "ResourceApplyAdam",
        "ScatterUpdate",
        "BatchFunction",
        "XlaCallModule",
    ):
        assert policy.decision(op)[0] == "refuse", (op, policy.decision(op))
        assert not policy.allows(op, in_saver=True), op
    for op in ("SaveV2", "RestoreV2", "MergeV2Checkpoints"):
        assert policy.allows(op, in_saver=True) and not policy.allows(op, in_saver=False)
    for op in ("RandomUniform", "StatelessRandomUniformV2", "StatefulUniform", "ImageProjectiveTransformV3"):
        assert policy.decision(op)[0] == "training_time", op


def test_live_augmentation_is_refused_naming_its_layers_and_the_remedy():
    error = pytest.raises(ExportError, check_saved_model_ops, built("tutorial_with_augmentation", ALL_BUILDERS)).value
    assert error.code is Code.FAILED_PRECONDITION
    assert error.message.startswith(
        "augmentation layers RandomFlip, RandomRotation, RandomZoom are active in serving_default"
    ), error.message
    assert "export the inference model without them" in error.message
    assert "ImageProjectiveTransformV3" in error.message


def test_the_largest_graph_here_passes_whole():
    """Every function of a large graph is walked (its speed is a benchmark's business, not a test's)."""
    folder = built("EfficientNetB0-export_archive")  # the largest graph here
    check_saved_model_ops(folder)
    assert len(saved_model_op_uses(folder)) > 1000


# --- hostile models are refused before anything runs -----------------------------------------


def classifier_folder(root: Path, canary: Path, extra) -> Path:
    """A model folder whose SavedModel looks like the canary's (image in, six probabilities out)
    but whose serving function also runs `extra(image, logits) -> logits`."""
    import numpy as np
    import tensorflow as tf

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(np.full((1, 1, 3, 6), 0.1, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            logits = tf.reduce_mean(tf.nn.conv2d(image, self.kernel, 1, "SAME"), axis=[1, 2])
            return {"probabilities": tf.nn.softmax(extra(image, logits))}

    module = Classifier()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary / "dict.txt", root / "dict.txt")
    shutil.copy(canary / "manifest.json", root / "manifest.json")
    shutil.copytree(canary / "images", root / "images")
    return root


def refused(folder: Path) -> ExportError:
    with pytest.raises(ExportError) as raised:
        read_model(folder)
    assert raised.value.code is Code.FAILED_PRECONDITION, raised.value
    return raised.value


def test_a_model_that_writes_a_file_is_refused_before_it_runs(tmp_path, canary_model):
    import tensorflow as tf

    from exporter.run import export_model

    target = tmp_path / "written-by-the-model.txt"

    def write(image, logits):
        tf.io.write_file(str(target), "written")
        return logits

    folder = classifier_folder(tmp_path / "model", canary_model, write)
    assert not target.exists()
    message = refused(folder).message
    assert message.startswith(
        "the SavedModel uses operations an image classifier export does not allow: "
        "WriteFile, which reads or writes files (in __inference_serve"
    )
    assert message.endswith(" node WriteFile)")
    destination = tmp_path / "exports"
    with pytest.raises(ExportError) as raised:
        export_model(folder, {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(destination)}})
    assert raised.value.code is Code.FAILED_PRECONDITION and "WriteFile" in raised.value.message
    assert not target.exists()
    assert not destination.exists() or not list(destination.iterdir())


def test_a_model_that_reads_a_file_is_refused(tmp_path, canary_model):
    import tensorflow as tf

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the model\n")

    def read(image, logits):
        return logits + 0.0 * tf.cast(tf.strings.length(tf.io.read_file(str(secret))), tf.float32)

    message = refused(classifier_folder(tmp_path / "model", canary_model, read)).message
    assert "ReadFile, which reads or writes files (in __inference_serve" in message


def test_a_model_that_calls_python_is_refused(tmp_path, canary_model):
    import tensorflow as tf

    def python(image, logits):
        return tf.ensure_shape(tf.py_function(lambda x: x, [logits], tf.float32), [None, 6])

    message = refused(classifier_folder(tmp_path / "model", canary_model, python)).message
    assert "EagerPyFunc, which calls back into Python (in __inference_serve" in message


def test_a_model_that_reads_a_dataset_is_refused(tmp_path, canary_model):
    import tensorflow as tf

    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n")

    def dataset(image, logits):
        total = tf.data.TextLineDataset(str(lines)).reduce(
            tf.constant(0, tf.int64), lambda count, line: count + tf.cast(tf.strings.length(line), tf.int64)
        )
        return logits + 0.0 * tf.cast(total, tf.float32)

    message = refused(classifier_folder(tmp_path / "model", canary_model, dataset)).message
    # The reader is in a function the dataset's flat_map calls, not in the serving function itself.
    assert "TextLineDataset, which takes a file, path, directory or address (in __inference_Dataset_flat_map" in message
    assert "ReduceDataset, which runs a dataset" in message and "(in __inference_serve" in message


def test_checkpoint_operations_in_a_serving_function_are_refused(tmp_path, canary_model):
    import tensorflow as tf

    prefix = tmp_path / "stolen"

    def save(image, logits):
        tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=["x"], shape_and_slices=[""], tensors=[logits])
        return logits

    message = refused(classifier_folder(tmp_path / "model", canary_model, save)).message
    assert "SaveV2, which is allowed only in the SavedModel's own variable saver (in __inference_serve" in message
    assert not list(tmp_path.glob("stolen*"))


def test_another_form_of_the_saved_model_beside_the_checked_one_is_refused(canary_model, tmp_path):
    """Some loaders read saved_model.cpb (or .pbtxt) first: the one checked must be the only one."""
    folder = tmp_path / "model"
    shutil.copytree(canary_model, folder)
    (folder / "saved_model" / "saved_model.cpb").write_bytes(b"anything")
    message = refused(folder).message
    assert message.startswith("the SavedModel folder holds saved_model.cpb besides saved_model.pb")


# --- hand-made SavedModels: what no TensorFlow API writes, but a file can hold ----------------


def edited(canary: Path, tmp_path: Path, edit) -> Path:
    """A copy of the canary model folder whose saved_model.pb went through `edit(meta_graph)`."""
    from tensorflow.core.protobuf import saved_model_pb2

    folder = tmp_path / "model"
    shutil.copytree(canary, folder)
    pb = folder / "saved_model" / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pb.read_bytes())
    edit(saved.meta_graphs[0])
    pb.write_bytes(saved.SerializeToString())
    return folder


def graph_node(meta_graph, name):
    return next(n for n in meta_graph.graph_def.node if n.name == name)


def function_named(meta_graph, prefix):
    return next(f for f in meta_graph.graph_def.library.function if f.signature.name.startswith(prefix))


def test_the_edited_canary_is_still_fine(canary_model, tmp_path):
    read_model(edited(canary_model, tmp_path, lambda meta_graph: None))


def test_a_call_that_names_an_operation_instead_of_a_function_is_refused(canary_model, tmp_path):
    def edit(meta_graph):
        serving = graph_node(
            meta_graph, meta_graph.signature_def["serving_default"].outputs["probabilities"].name.split(":")[0]
        )
        serving.attr["f"].func.name = "WriteFile"

    message = refused(edited(canary_model, tmp_path, edit)).message
    assert "WriteFile, which reads or writes files (in the graph, node StatefulPartitionedCall)" in message


def test_a_restore_from_a_path_of_the_models_own_is_refused(canary_model, tmp_path):
    def edit(meta_graph):
        restore = function_named(meta_graph, "__inference__traced_restore")
        path = restore.node_def.add(name="own_path", op="Const")
        path.attr["dtype"].type = 7  # DT_STRING
        path.attr["value"].tensor.dtype = 7
        path.attr["value"].tensor.string_val.append(b"/somewhere/else/model")
        node = next(n for n in restore.node_def if n.op == "RestoreV2")
        node.input[0] = "own_path:output:0"

    error = refused(edited(canary_model, tmp_path, edit))
    assert error.message.startswith("the SavedModel's variable saver reads or writes a path other than the one")
    assert "RestoreV2 (in __inference__traced_restore" in error.message


def test_a_save_that_climbs_out_of_the_variables_folder_is_refused(canary_model, tmp_path):
    def edit(meta_graph):
        save = function_named(meta_graph, "__inference__traced_save")
        for node in save.node_def:
            if node.op == "Const" and node.attr["value"].tensor.string_val == [b"_temp/part"]:
                node.attr["value"].tensor.string_val[0] = b"/../../../elsewhere/part"

    message = refused(edited(canary_model, tmp_path, edit)).message
    assert "SaveV2 (in __inference__traced_save" in message and "MergeV2Checkpoints" in message


def test_the_saver_called_from_elsewhere_is_not_the_savers_alone(canary_model, tmp_path):
    """A second graph node calling the save function with a path of its own: no longer saver-only."""

    def edit(meta_graph):
        saver = graph_node(meta_graph, meta_graph.saver_def.save_tensor_name.split(":")[0])
        path = meta_graph.graph_def.node.add(name="own_path", op="Const")
        path.attr["dtype"].type = 7
        path.attr["value"].tensor.dtype = 7
        path.attr["value"].tensor.string_val.append(b"elsewhere")
        call = meta_graph.graph_def.node.add()
        call.CopyFrom(saver)
        call.name = "another_save"
        call.input[0] = "own_path"

    message = refused(edited(canary_model, tmp_path, edit)).message
    assert (
        "SaveV2, which is allowed only in the SavedModel's own variable saver (in __inference__traced_save" in message
    )


def test_an_operation_the_registry_lacks_is_refused_by_name(canary_model, tmp_path):
    """A custom op (or one from another TensorFlow build): nothing says what it does, so it is refused."""

    def edit(meta_graph):
        function = next(f for f in meta_graph.graph_def.library.function if any(n.op == "Softmax" for n in f.node_def))
        node = next(n for n in function.node_def if n.op == "Softmax")
        node.op = "MyCustomSoftmax"

    message = refused(edited(canary_model, tmp_path, edit)).message
    assert "MyCustomSoftmax, which is not an operation of TensorFlow 2." in message
    assert "registry (a custom operation?)" in message
