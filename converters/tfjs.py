"""modelFormat ``tf_js``: a TensorFlow.js graph model, verified in Node.js on the wasm backend.

Converted from the source SavedModel's serving signature (not the serving model, which decodes
JPEG in the graph). With ``input_contract=automl`` the graph takes what AutoML's tf_js exports
take and ``@tensorflow/tfjs-automl`` feeds: a [N, 224, 224, 3] image scaled to [-1, 1]; a wrapper
maps it back to pixels, resizes to the model's input and applies the model's normalization.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from converters.base import Converter, library_failure, register
from converters.node_runtime import tfjs_predict
from converters.signature import load_serving_signature
from converters.verification import Tolerance, compare
from exporter.core.images import load_image_set
from exporter.core.labels import write_labels
from exporter.core.model_source import SERVING_KEY

AUTOML_SIZE = 224
QUANTIZATION_MAPS = {"float32": None, "float16": {"float16": "*"}, "uint8": {"uint8": "*"}}
TOLERANCES = {
    "float32": Tolerance(0.0, max_abs_diff=1e-4),
    "float16": Tolerance(0.01, max_abs_diff=0.05),
    "uint8": Tolerance(0.03, max_abs_diff=None),
}
# The automl contract resizes twice (to 224, then to the model's size): like the serving
# model's check on original files, a small share of decided images may flip.
AUTOML_EXTRA = 0.02


def automl_wrapper(source, folder: Path) -> None:
    """A SavedModel taking AutoML's tf_js input and calling the source model."""
    import tensorflow as tf

    serving = load_serving_signature(source.saved_model_dir)
    loaded, classify = serving.loaded, serving.function
    mean = tf.constant(source.mean, tf.float32)
    std = tf.constant(source.std, tf.float32)

    class AutoMLContract(tf.Module):
        def __init__(self):
            super().__init__()
            self.classifier = loaded

        @tf.function(input_signature=[tf.TensorSpec([None, AUTOML_SIZE, AUTOML_SIZE, 3], tf.float32, name="image")])
        def serve(self, image):
            pixels = (image + 1.0) * 127.5
            if (source.height, source.width) != (AUTOML_SIZE, AUTOML_SIZE):
                pixels = tf.image.resize(pixels, [source.height, source.width], method="bilinear")
            scores = classify(**{source.input_key: (pixels - mean) / std})[source.output_key]
            return {"scores": scores}

    module = AutoMLContract()
    tf.saved_model.save(module, str(folder), signatures={SERVING_KEY: module.serve})


def automl_inputs(source) -> np.ndarray:
    images = load_image_set(source.heldout_dir, source.labels, AUTOML_SIZE, AUTOML_SIZE, limit=1000, purpose="held-out")
    return images.pixels.astype(np.float32) / 127.5 - 1.0


@register("tf_js")
class TFJSConverter(Converter):
    libraries = ("tensorflow", "tensorflowjs")

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs

        with tempfile.TemporaryDirectory(prefix="tfjs-source-") as scratch:
            saved_model = source.saved_model_dir
            if params["input_contract"] == "automl":
                saved_model = Path(scratch) / "automl"
                automl_wrapper(source, saved_model)
            try:
                tfjs.convert_tf_saved_model(
                    str(saved_model),
                    str(workdir),
                    signature_def=SERVING_KEY,
                    saved_model_tags="serve",
                    quantization_dtype_map=QUANTIZATION_MAPS[params["quantization"]],
                    weight_shard_size_bytes=int(params["shard_size_bytes"]),
                )
            except (ValueError, NotImplementedError, TypeError) as error:  # the converter's refusals
                raise library_failure("tensorflowjs", error) from error
        write_labels(workdir, source.labels)
        return sorted(p for p in workdir.iterdir() if p.is_file())

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        tolerance = TOLERANCES[params["quantization"]]
        if params["input_contract"] == "automl":
            inputs = automl_inputs(source)
            tolerance = Tolerance(tolerance.max_disagreement_fraction + AUTOML_EXTRA, None, tolerance.near_tie_margin)
            what = "model.json (automl input contract, 224x224 in [-1, 1])"
        else:
            inputs, what = reference.inputs, f"model.json ({params['quantization']})"
        scores, info = tfjs_predict(workdir, inputs)
        return {"verification": compare(f"node {info['backend']}", reference, scores, tolerance, what=what)}
