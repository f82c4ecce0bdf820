"""modelFormat ``tf_js``: a TensorFlow.js graph model, verified in Node.js.

Converted from the source SavedModel's serving signature (not the serving model, which decodes
JPEG in the graph), from a graph no oneDNN rewrite touched (``converters/tf_js/graph.py``).
Verified on the wasm backend, where users run tfjs models most; where wasm refuses an op or a
shape, on the cpu backend instead. The report records each backend's outcome; the export fails
(FAILED_PRECONDITION, a runtime's limit) only when no backend runs the model. With
``input_contract=automl`` the graph takes what AutoML's tf_js exports take and
``@tensorflow/tfjs-automl`` feeds: a [N, 224, 224, 3] image scaled to [-1, 1]; a wrapper maps it
back to pixels, resizes to the model's input and applies the model's normalization.

A model whose output is logits gets a softmax at the end of the graph unless ``output_scores`` is
``logits`` (converters/output_scores.py); ``model.json``'s ``userDefinedMetadata.scores`` (what
tfjs gives as ``GraphModel.metadata``) says which the output is, and the verification reads it there.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from converters.base import Converter, register
from converters.graph_rewrites import for_converters, needs_rewrite
from converters.output_scores import ScoresPlan, plan_for, recorded_kind, scores_function
from converters.signature import load_serving_signature
from converters.tf_js.graph import convert_graph
from converters.tf_js.node_runtime import BackendRefused, tfjs_predict
from converters.verification import CheckReport, Tolerance, compare
from exporter.core.errors import Code, ExportError
from exporter.core.images import load_image_set
from exporter.core.labels import write_labels
from exporter.core.model_source import SERVING_KEY

AUTOML_SIZE = 224
# The backends tried in order: wasm first (fast, where users run tfjs), cpu where wasm refuses.
BACKENDS = ("wasm", "cpu")
TOLERANCES = {
    "float32": Tolerance(0.0, max_abs_diff=1e-4),
    "float16": Tolerance(0.01, max_abs_diff=0.05),
    "uint8": Tolerance(0.03, max_abs_diff=None),
}
# The automl contract resizes twice (to 224, then to the model's size): like the serving
# model's check on original files, a small share of decided images may flip.
AUTOML_EXTRA = 0.02


def wrapper(source, folder: Path, *, automl: bool, add_softmax: bool, rewrite: bool = False) -> None:
    """A SavedModel calling the source model: with AutoML's tf_js input (`automl`), with a softmax
    after it (`add_softmax`), through the signature adapter (a uint8 input, several outputs), and
    with the operations tensorflowjs lacks rewritten (`rewrite`: converters/graph_rewrites.py)."""
    import tensorflow as tf

    serving = load_serving_signature(source.saved_model_dir)
    mean = tf.constant(source.mean, tf.float32)
    std = tf.constant(source.std, tf.float32)

    def from_automl_input(image):
        pixels = (image + 1.0) * 127.5
        if (source.height, source.width) != (AUTOML_SIZE, AUTOML_SIZE):
            pixels = tf.image.resize(pixels, [source.height, source.width], method="bilinear")
        return (pixels - mean) / std

    if automl:
        shape, names = [None, AUTOML_SIZE, AUTOML_SIZE, 3], {"input_name": "image", "output_name": "scores"}
        scores = scores_function(source, serving, shape, add_softmax=add_softmax, preprocess=from_automl_input, **names)
    else:
        scores = scores_function(source, serving, [None, source.height, source.width, 3], add_softmax=add_softmax)

    class Wrapper(tf.Module):
        def __init__(self):
            super().__init__()
            self.classifier = serving.loaded  # tracked, so its variables are saved with the module
            self.serve = scores

    module = Wrapper()
    if rewrite:  # frozen: the rewritten graph holds the weights as constants
        tf.saved_model.save(
            tf.Module(), str(folder), signatures={SERVING_KEY: for_converters(scores.get_concrete_function())}
        )
        return
    tf.saved_model.save(module, str(folder), signatures={SERVING_KEY: module.serve})


def scores_kind(workdir: Path) -> str | None:
    """What model.json says its scores are (userDefinedMetadata.scores.are), None when it does not say."""
    manifest = json.loads((workdir / "model.json").read_text())
    return recorded_kind((manifest.get("userDefinedMetadata") or {}).get("scores"))


def automl_inputs(source) -> np.ndarray:
    images = load_image_set(source.heldout_dir, source.labels, AUTOML_SIZE, AUTOML_SIZE, limit=1000, purpose="held-out")
    return images.pixels.astype(np.float32) / 127.5 - 1.0


@register("tf_js")
class TFJSConverter(Converter):
    libraries = ("tensorflow", "tensorflowjs")

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        scores: ScoresPlan = plan_for(source, params)  # what the model outputs, on held-out images
        automl = params["input_contract"] == "automl"
        with tempfile.TemporaryDirectory(prefix="tfjs-source-") as scratch:
            saved_model = source.saved_model_dir
            rewrite = needs_rewrite(source.saved_model_dir)  # an op tensorflowjs lacks (Erfc)
            if automl or scores.softmax_added or rewrite or not source.plain_signature:
                saved_model = Path(scratch) / "wrapped"
                wrapper(source, saved_model, automl=automl, add_softmax=scores.softmax_added, rewrite=rewrite)
            convert_graph(
                saved_model,
                workdir,
                params["quantization"],
                int(params["shard_size_bytes"]),
                metadata={"scores": scores.record(len(source.labels))},
            )
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
        # Exports made before model.json said what its scores are output the model's own.
        kind = scores_kind(workdir) or reference.kind
        backends: dict[str, dict] = {}
        for backend in BACKENDS:
            try:
                scores, info = tfjs_predict(workdir, inputs, backend)
            except BackendRefused as refusal:
                backends[backend] = {"runs": False, "reason": refusal.reason}
                continue
            check = compare(f"node {info['backend']}", reference, scores, tolerance, what=what, scores_kind=kind)
            backends[backend] = {"runs": True, "agrees": True, "msPerImage": round(info["msPerImage"], 3)}
            for later in BACKENDS[BACKENDS.index(backend) + 1 :]:
                backends[later] = {"runs": None, "reason": f"not tried: the {backend} backend ran the model"}
            return {"verification": check, "backends": CheckReport(backends)}
        reasons = "; ".join(f"{name}: {outcome['reason']}" for name, outcome in backends.items())
        raise ExportError(Code.FAILED_PRECONDITION, f"no tfjs backend runs the model ({reasons})")
