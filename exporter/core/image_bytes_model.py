"""A serving SavedModel that takes encoded images (AutoML's ``image_bytes`` + ``key`` contract, as
this engine's own ``tf_saved_model`` exports and AutoML's do), turned back into an image classifier.

Such a model decodes and resizes each image inside its graph, which no mobile format can hold. The
engine freezes the serving function (variables become constants), finds where the decoded images
enter the classifier (the first float32 ``[batch, height, width, 3]`` tensor of the graph: the
decoded, resized batch, 0..255 values), and keeps only the graph from there to the ``scores``
output: a float32 image classifier taking 0..255 pixels, saved in a private folder and exported as
any other model. The labels come from the model's own ``labels`` output (run once on a blank image),
unless a labels file is given (``dict.txt`` beside the model, or ``--labels``). The SavedModel's
operations are checked before TensorFlow loads it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exporter.core.errors import Code, ExportError
from exporter.core.keras_files import display_name_for
from exporter.core.manifest import DISPLAY_NAME
from exporter.core.op_policy import SERVING_KEY, check_saved_model_ops
from exporter.core.saved_model_proto import read_signatures

IMAGE_BYTES, KEY = "image_bytes", "key"
SCORES, LABELS = "scores", "labels"


def saved_model_dir_of(folder: Path) -> Path | None:
    for candidate in (folder / "saved_model", folder):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    return None


def takes_image_bytes(folder: str | Path) -> bool:
    """Whether the folder's SavedModel serves encoded images (read from saved_model.pb alone)."""
    saved_model = saved_model_dir_of(Path(folder))
    if saved_model is None or (Path(folder) / "manifest.json").exists():
        return False  # a model folder with a manifest says what it is; read_model checks it
    try:
        inputs, _ = read_signatures(saved_model).get(SERVING_KEY, ({}, {}))
    except ExportError:
        return False  # read_model reports what is wrong with it
    return inputs.get(IMAGE_BYTES, ("", None))[0] == "string"


@contextmanager
def classifier_folder(folder: str | Path) -> Iterator[Path]:
    """A private model folder with the classifier inside the image_bytes model at `folder`."""
    folder = Path(folder).resolve()
    saved_model = saved_model_dir_of(folder)
    check_saved_model_ops(saved_model)  # before TensorFlow loads it: it is a program
    name = _display_name(folder)
    with tempfile.TemporaryDirectory(prefix="image-bytes-model-") as scratch:  # mode 0700
        target = Path(scratch) / name
        target.mkdir()
        labels = _prune(saved_model, target / "saved_model")
        # A labels file beside the model says what the user means; else the model's own labels output.
        if (folder / "dict.txt").is_file():
            shutil.copyfile(folder / "dict.txt", target / "dict.txt")
        elif labels:
            (target / "dict.txt").write_text("\n".join(labels) + "\n")
        manifest = {"display_name": name, "converted_from": f"{folder.name} ({IMAGE_BYTES} serving model)"}
        (target / "manifest.json").write_text(json.dumps(manifest))
        if (folder / "images").is_dir():  # a model folder's own images come along; links stay links,
            shutil.copytree(folder / "images", target / "images", symlinks=True)  # refused by read_model
        yield target


def _display_name(folder: Path) -> str:
    """The display name an export of this engine records in its report, else one from the folder's name."""
    try:
        name = json.loads((folder / "export_report.json").read_text())["model"]["displayName"]
    except (OSError, ValueError, KeyError, TypeError):
        return display_name_for(folder)
    return name if isinstance(name, str) and DISPLAY_NAME.match(name) else display_name_for(folder)


def _prune(saved_model: Path, target: Path) -> list[str]:
    """Save the classifier part of the serving function at `target`; return the labels it outputs."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    loaded = tf.saved_model.load(str(saved_model))  # kept: the signature holds its variables weakly
    serving = loaded.signatures[SERVING_KEY]
    outputs = serving.structured_outputs
    if SCORES not in outputs:
        raise ExportError(
            Code.INVALID_ARGUMENT,
            f"the {IMAGE_BYTES} serving signature must have a {SCORES!r} output; found {', '.join(sorted(outputs))}",
        )
    frozen = convert_variables_to_constants_v2(serving)
    graph = frozen.graph
    images = _decoded_images(graph)
    # The frozen function's outputs are the signature's, flattened (a dict flattens in key order).
    names = tf.nest.flatten({name: name for name in outputs})
    scores = frozen.outputs[names.index(SCORES)]
    graph_def = graph.as_graph_def()

    def imported():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    pruned = wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(images.name)],
        fetches={SCORES: wrapped.graph.get_tensor_by_name(scores.name)},
    )
    height, width = images.shape[1], images.shape[2]

    class Classifier(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="image")])
        def serve(self, image):
            return {SCORES: pruned(image)[SCORES]}

    module = Classifier()
    tf.saved_model.save(module, str(target), signatures={SERVING_KEY: module.serve})
    labels = _labels(serving)
    del loaded
    return labels


def _decoded_images(graph):
    """The first float32 [batch, height, width, 3] tensor of the graph, with height and width known."""
    for operation in graph.get_operations():
        for tensor in operation.outputs:
            shape = tensor.shape
            if (
                tensor.dtype.name == "float32"
                and shape.rank == 4
                and shape[0] is None
                and shape[1] is not None
                and shape[2] is not None
                and shape[3] == 3
            ):
                return tensor
    raise ExportError(
        Code.INVALID_ARGUMENT,
        f"the {IMAGE_BYTES} serving model has no batch of decoded images [batch, height, width, 3] of a fixed "
        "size inside its graph to export the classifier from",
    )


def _labels(serving) -> list[str]:
    """The labels the model returns for one image (AutoML's serving models return them all, in
    the order of the scores, with every prediction)."""
    import tensorflow as tf

    if LABELS not in serving.structured_outputs:
        return []
    try:
        result = serving(**{IMAGE_BYTES: tf.constant([_tiny_png()]), KEY: tf.constant(["0"])})
    except (tf.errors.OpError, TypeError, ValueError):
        return []
    row = result[LABELS].numpy()
    return [value.decode("utf-8") for value in row.reshape(-1, row.shape[-1])[0]] if row.ndim >= 1 else []


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()
