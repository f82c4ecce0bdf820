"""MediaPipe Tasks' ImageClassifier loads the tflite exports alone, labels and all."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.tflite.metadata import read_metadata
from exporter.core.images import load_image_set, normalize
from exporter.core.model_source import read_model
from exporter.core.tflite_model import TFLiteModel

NEAR_TIE = 0.01


@pytest.mark.parametrize("name", ["digits", "canary"])
@pytest.mark.parametrize("mode", ["uint8", "float32"])
def test_mediapipe_classifies_like_our_verification(tflite_exports, name, mode, tmp_path, request):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    model_dir = request.getfixturevalue(f"{name}_model")
    source = read_model(model_dir)
    export = Path(tflite_exports[name, mode][1].output_dir)
    alone = tmp_path / "model.tflite"  # no dict.txt, no tflite_metadata.json beside it
    shutil.copy(export / "model.tflite", alone)
    labels = (export / "dict.txt").read_text().split()

    images = load_image_set(
        source.heldout_dir, source.labels, source.height, source.width, limit=120, purpose="held-out"
    )
    embedded = read_metadata(alone.read_bytes())  # fed as the metadata says, as predict and MediaPipe do
    ours = TFLiteModel(alone).predict(normalize(images.pixels, embedded["mean"], embedded["std"]))
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(alone)), max_results=1)
    compared = 0
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for pixels, scores in zip(images.pixels, ours, strict=True):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))
            (top,) = classifier.classify(image).classifications[0].categories
            assert top.category_name is not None, "MediaPipe found no labels in the model"
            assert top.category_name == labels[top.index]
            ranked = np.sort(scores)
            if ranked[-1] - ranked[-2] >= NEAR_TIE:
                assert top.category_name == labels[int(scores.argmax())]
                compared += 1
    assert compared >= 0.9 * len(images)


def test_embedded_metadata_carries_labels_and_normalization(tflite_exports, canary_model):
    export = Path(tflite_exports["canary", "float32"][1].output_dir)
    found = read_metadata((export / "model.tflite").read_bytes())
    assert found == {
        "name": "colour_canary",
        "mean": [0.0, 0.0, 0.0],
        "std": [255.0, 255.0, 255.0],
        "labels": ["red", "yellow", "green", "cyan", "blue", "magenta"],
        "scores": "probabilities",
    }
