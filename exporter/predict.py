"""Classify image files with an exported artifact, for a user's quick check.

Takes a ``.tflite`` file (labels and normalization from its embedded metadata), an export folder
holding one, or a serving SavedModel folder (``image_bytes`` in, ``scores`` and ``labels`` out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.core.errors import Code, ExportError


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[str, float]]  # (label, score), best first


def _tflite_classifier(path: Path):
    from converters.tflite_metadata import read_metadata
    from converters.tflite_runtime import TFLiteModel
    from exporter.core.images import load_pixels, normalize

    metadata = read_metadata(path.read_bytes())
    if metadata is None:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"{path.name} has no embedded TFLite metadata: its labels and input normalization are "
            "unknown (exports of this engine always embed them)",
        )
    model = TFLiteModel(path)
    _, height, width, _ = (int(d) for d in model.input["shape"])

    def classify(image: Path) -> tuple[np.ndarray, list[str]]:
        pixels = load_pixels(image, height, width)
        return model.predict_one(normalize(pixels, metadata["mean"], metadata["std"])), metadata["labels"]

    return classify


def _serving_classifier(folder: Path):
    import tensorflow as tf

    from converters.signature import load_serving_signature

    serve = load_serving_signature(folder)

    def classify(image: Path) -> tuple[np.ndarray, list[str]]:
        result = serve(image_bytes=tf.constant([image.read_bytes()]), key=tf.constant([image.name]))
        return result["scores"].numpy()[0], [s.decode() for s in result["labels"].numpy()[0]]

    return classify


def load_classifier(artifact: str | Path):
    """A function image path -> (scores, labels) for the artifact at `artifact`."""
    from exporter.core.saved_model_proto import read_signatures

    path = Path(artifact)
    if path.is_dir() and (path / "model.tflite").is_file():
        path = path / "model.tflite"
    if path.is_file() and path.suffix == ".tflite":
        return _tflite_classifier(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        inputs, _ = read_signatures(path).get("serving_default", ({}, {}))
        if "image_bytes" in inputs:
            return _serving_classifier(path)
    if not path.exists():
        raise ExportError(Code.NOT_FOUND, f"artifact {str(artifact)!r} does not exist")
    raise ExportError(
        Code.INVALID_ARGUMENT,
        f"{str(artifact)!r} is not an artifact predict can run: give a .tflite file, an export "
        "folder holding model.tflite, or a serving SavedModel (tf_saved_model export)",
    )


def predict(artifact: str | Path, images: list[str | Path], top_k: int = 3) -> list[Prediction]:
    classify = load_classifier(artifact)
    predictions = []
    for image in map(Path, images):
        if not image.is_file():
            raise ExportError(Code.NOT_FOUND, f"image {str(image)!r} does not exist")
        scores, labels = classify(image)
        best = np.argsort(scores)[::-1][:top_k]
        predictions.append(Prediction(str(image), [(labels[i], float(scores[i])) for i in best]))
    return predictions
