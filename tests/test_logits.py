"""A model whose output is logits: detected on the held-out images, compared in probability space,
exported as probabilities (a softmax added, as AutoML's exports) or, by output_scores, as logits;
the tflite metadata and the serving SavedModel say which."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.output_scores import is_probability_distribution, softmax
from converters.tflite_runtime import TFLiteModel
from converters.verification import Reference, Tolerance, compare, make_reference
from exporter.core.errors import Code, ExportError
from exporter.core.images import load_image_set, normalize
from exporter.core.model_source import read_model
from exporter.run import export_model

SHARPNESS, SHIFT = 12.0, -4.0  # logits = 12 p - 4: outside 0..1, rows not summing to 1, the canary's top-1


@pytest.fixture(scope="module")
def logits_model(tmp_path_factory, canary_model):
    """The colour canary with its softmax undone: a real SavedModel whose output is logits."""
    import tensorflow as tf

    canary = tf.saved_model.load(str(canary_model / "saved_model"))

    class Logits(tf.Module):
        def __init__(self):
            super().__init__()
            self.canary = canary

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            probabilities = self.canary.signatures["serving_default"](image=image)["probabilities"]
            return {"logits": SHARPNESS * probabilities + SHIFT}

    root = tmp_path_factory.mktemp("logits-model")
    module = Logits()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary_model / "dict.txt", root / "dict.txt")
    shutil.copytree(canary_model / "images", root / "images")
    (root / "manifest.json").write_text(json.dumps({"display_name": "canary_logits", "input": {"range": "0..1"}}))
    return root


def export(model: Path, destination: Path, fmt: str, **params) -> tuple[Path, dict]:
    result = export_model(
        model, {"modelFormat": fmt, "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}
    )
    return Path(result.output_dir), result.report


def heldout(model: Path, limit: int = 60):
    source = read_model(model)
    images = load_image_set(
        source.heldout_dir, source.labels, source.height, source.width, limit=limit, purpose="held-out"
    )
    return source, images


def test_the_source_is_detected_as_logits(logits_model, canary_model):
    assert make_reference(read_model(logits_model)).kind == "logits"
    assert make_reference(read_model(canary_model)).kind == "probabilities"


def test_comparison_does_not_depend_on_the_logits_scale():
    """A shift of every logit by 0.3 changes no probability: float16's 0.05 on scores still holds."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (200, 6)).astype(np.float32)
    reference = Reference(
        images=_unlabelled(200), inputs=np.zeros((200, 1, 1, 3), np.float32), scores=logits, kind="logits"
    )
    check = compare("test", reference, logits + 0.3, Tolerance(0.01, max_abs_diff=0.05), what="shifted logits")
    assert check.passed and check.max_abs_diff < 1e-5
    assert check.scores == {"source": "logits", "artifact": "logits", "comparedAs": "probabilities"}
    # Compared as probabilities with an artifact that outputs them: the same numbers.
    check = compare(
        "test", reference, softmax(logits), Tolerance(0.0, max_abs_diff=1e-5), "softmax", scores_kind="probabilities"
    )
    assert check.agreeing == check.decided and check.max_abs_diff < 1e-5
    # A real difference still fails, in probability space.
    with pytest.raises(ExportError, match=r"max abs difference"):
        compare("test", reference, logits * 1.5, Tolerance(1.0, max_abs_diff=0.05), what="sharpened logits")


def _unlabelled(count: int):
    from exporter.core.images import UNLABELED, ImageSet

    return ImageSet(
        tuple(Path(f"{i}.png") for i in range(count)), np.zeros((count, 1, 1, 3), np.uint8), np.full(count, UNLABELED)
    )


@pytest.mark.parametrize("quantization", ["float16", "uint8"])
def test_tflite_outputs_probabilities_by_default(logits_model, tmp_path, quantization):
    folder, report = export(logits_model, tmp_path, "tflite", quantization=quantization)
    check = report["checks"]["verification"]
    assert check["passed"] and check["scores"] == {
        "source": "logits",
        "artifact": "probabilities",
        "comparedAs": "probabilities",
    }
    metadata = json.loads((folder / "tflite_metadata.json").read_text())
    assert metadata["scores"]["are"] == "probabilities" and metadata["scores"]["softmaxAdded"] is True
    source, images = heldout(logits_model)
    scores = TFLiteModel(folder / "model.tflite").predict(normalize(images.pixels, *_fed(metadata)))
    assert (
        is_probability_distribution(scores) if quantization == "float16" else np.allclose(scores.sum(1), 1, atol=0.03)
    )
    assert_mediapipe_scores(folder / "model.tflite", images.pixels, upper=1.0)


def test_tflite_keeps_the_logits_when_asked(logits_model, tmp_path):
    folder, report = export(logits_model, tmp_path, "tflite", quantization="float32", output_scores="logits")
    assert report["checks"]["verification"]["scores"]["artifact"] == "logits"
    metadata = json.loads((folder / "tflite_metadata.json").read_text())
    assert metadata["scores"] == {
        "are": "logits",
        "modelOutputs": "logits",
        "softmaxAdded": False,
        "description": "logits (unnormalized scores) of the 6 labels; apply a softmax for probabilities",
    }
    source, images = heldout(logits_model)
    inputs = normalize(images.pixels, source.mean, source.std)
    from converters.verification import source_scores

    expected = source_scores(source.saved_model_dir, inputs)
    assert np.abs(TFLiteModel(folder / "model.tflite").predict(inputs) - expected).max() < 1e-3
    assert expected.min() < -3 and expected.max() > 5  # really logits


def test_serving_savedmodel_says_what_scores_are(logits_model, tmp_path):
    import tensorflow as tf

    from converters.tf_saved_model import png_bytes

    source, images = heldout(logits_model, limit=20)
    for requested, kind in (("probabilities", "probabilities"), ("logits", "logits")):
        folder, report = export(logits_model, tmp_path / requested, "tf_saved_model", output_scores=requested)
        assert (
            report["checks"]["verification"]["passed"]
            and report["checks"]["verification"]["scores"]["artifact"] == kind
        )
        assert (folder / "assets" / "scores.txt").read_text().startswith(f"scores: {kind}")
        serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
        scores = serve(image_bytes=tf.constant([png_bytes(p) for p in images.pixels]), key=tf.constant(["k"] * 20))[
            "scores"
        ].numpy()
        assert is_probability_distribution(scores) == (kind == "probabilities")


def test_asking_for_the_logits_of_a_softmax_model_is_refused(canary_model, tmp_path):
    with pytest.raises(ExportError) as raised:
        export(canary_model, tmp_path, "tflite", quantization="float32", output_scores="logits")
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert "output_scores=logits: this model outputs probabilities" in raised.value.message


def test_output_scores_param_is_validated(canary_model, tmp_path):
    with pytest.raises(ExportError) as raised:
        export(canary_model, tmp_path, "tflite", output_scores="softmax")
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert "output_scores" in raised.value.message and "probabilities, logits" in raised.value.message


def _fed(metadata: dict) -> tuple[list, list]:
    feed = metadata["input"]["feed"]
    return feed["mean"], feed["std"]


def assert_mediapipe_scores(model: Path, pixels: np.ndarray, upper: float) -> None:
    """MediaPipe loads the model alone and its scores are probabilities (no 9.894 "score")."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in pixels[:10]:
            (top,) = (
                classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
                .classifications[0]
                .categories
            )
            assert 0.0 <= top.score <= upper + 1e-6
