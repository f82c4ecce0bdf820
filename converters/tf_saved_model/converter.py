"""modelFormat ``tf_saved_model``: the serving SavedModel of AutoML's exports and containers.

``serving_default`` takes ``image_bytes`` (encoded JPEG, PNG, GIF or BMP, string [N]) and ``key``
(string [N]) and returns ``scores`` [N, C], ``labels`` (string, the labels tiled to [N, C], since
TF Serving's row format needs every output to share dimension 0) and ``key`` [N]. Decoding to RGB,
resizing (bilinear, antialiased, as Pillow does) and the model's normalization happen inside the
graph, so a client sends the file as it is.

``scores`` are probabilities: a model whose output is logits gets a softmax in the graph, unless
the ``output_scores`` param asks for its logits (converters/output_scores.py). The SavedModel says
which in ``assets/scores.txt``.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from converters.base import Converter, register
from converters.output_scores import PROBABILITIES, artifact_kind, artifact_scores, describe, plan_for
from converters.signature import call_model, load_serving_signature
from converters.verification import Reference, Tolerance, compare
from exporter.core.model_source import SERVING_KEY

# The model part is the same arithmetic: fed lossless images at the input size, it must match.
EXACT = Tolerance(0.0, max_abs_diff=1e-4)
# From the original files, TensorFlow's decoders and resize differ a little from Pillow's.
END_TO_END = Tolerance(0.02, max_abs_diff=None)


SCORES_FILE = "scores.txt"  # in assets/: what the scores output is


def build_serving_model(source, folder: Path, *, add_softmax: bool = False, scores_kind: str = PROBABILITIES) -> None:
    import tensorflow as tf

    serving = load_serving_signature(source.saved_model_dir)
    loaded = serving.loaded
    height, width = source.height, source.width
    mean = tf.constant(source.mean, tf.float32)
    std = tf.constant(source.std, tf.float32)
    labels = tf.constant(list(source.labels))

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [height, width], antialias=True)
        return tf.ensure_shape(image, [height, width, 3])

    class Serving(tf.Module):
        def __init__(self, scores_file: str):
            super().__init__()
            self.classifier = loaded  # tracked, so its variables are saved with the module
            self.scores_file = tf.saved_model.Asset(scores_file)  # copied into assets/

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="image_bytes"),
                tf.TensorSpec([None], tf.string, name="key"),
            ]
        )
        def serve(self, image_bytes, key):
            images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
            # Pillow rounds resized pixels to uint8; so does the graph, for the same inputs.
            images = tf.clip_by_value(tf.round(images), 0.0, 255.0)
            scores = artifact_scores(call_model(serving, source, (images - mean) / std), add_softmax)
            rows = tf.shape(scores)[0]
            return {
                "scores": scores,
                "labels": tf.tile(labels[None, :], [rows, 1]),
                "key": tf.identity(key),
            }

    with tempfile.TemporaryDirectory(prefix="serving-") as scratch:
        scores_file = Path(scratch) / SCORES_FILE
        scores_file.write_text(f"scores: {describe(scores_kind, len(source.labels))}\n")
        module = Serving(str(scores_file))
        tf.saved_model.save(module, str(folder), signatures={SERVING_KEY: module.serve})


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def serving_scores(serve, encoded: list[bytes], batch: int = 32) -> np.ndarray:
    """The exported serving signature's scores for encoded images, in TensorFlow."""
    import tensorflow as tf

    scores = []
    for start in range(0, len(encoded), batch):
        chunk = encoded[start : start + batch]
        keys = [str(i).encode() for i in range(start, start + len(chunk))]
        result = serve(image_bytes=tf.constant(chunk), key=tf.constant(keys))
        if [k.decode() for k in result["key"].numpy()] != [k.decode() for k in keys]:
            raise AssertionError("the serving model did not return the keys it was given")
        scores.append(result["scores"].numpy())
    return np.concatenate(scores)


def serving_checks(folder: Path, reference: Reference, scores_kind: str | None = None) -> dict:
    """The serving model against the source: exact on lossless inputs, and from the files.

    `scores_kind`: what the serving model's scores are (default: what the source's are)."""
    serve = load_serving_signature(folder)  # once for both checks
    exact = serving_scores(serve, [png_bytes(p) for p in reference.images.pixels])
    from_files = serving_scores(serve, [path.read_bytes() for path in reference.images.paths])
    return {
        "verification": compare(
            "tensorflow",
            reference,
            exact,
            EXACT,
            what="serving SavedModel on PNG at input size",
            scores_kind=scores_kind,
        ),
        "endToEnd": compare(
            "tensorflow",
            reference,
            from_files,
            END_TO_END,
            what="serving SavedModel on the original image files",
            note=(
                "flips here come from TensorFlow's image decoders and resize (inside the serving graph) "
                "differing from Pillow's, which feed the source side of every comparison"
            ),
            scores_kind=scores_kind,
        ),
    }


@register("tf_saved_model")
class ServingSavedModelConverter(Converter):
    libraries = ("tensorflow",)

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        scores = plan_for(source, params)  # what the model outputs, on held-out images
        build_serving_model(source, workdir, add_softmax=scores.softmax_added, scores_kind=scores.are)
        return sorted(p for p in workdir.rglob("*") if p.is_file())

    def verify(self, source, workdir: Path, params: dict[str, str], reference: Reference):
        scores_kind = artifact_kind(reference.kind, params.get("output_scores", PROBABILITIES))
        return serving_checks(workdir, reference, scores_kind)
