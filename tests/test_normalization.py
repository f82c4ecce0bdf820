"""Artifacts verified as their consumers feed them: a uint8/int8 tflite takes raw 0..255 pixels
whatever the model's normalization (folded into the graph before quantizing), a float tflite of a
per-channel mean/std model gets one mean and std MediaPipe accepts, and MediaPipe's ImageClassifier,
loading the model file alone, answers as the engine's verification measured."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.input_plan import consumer_scores
from converters.tflite.metadata import read_metadata
from converters.verification import make_reference
from exporter.core.model_source import read_model
from exporter.core.tflite_model import TFLiteModel
from exporter.run import export_model

# Per-channel, far from one another, so that a consumer who applies one of them gets wrong inputs.
MEAN, STD = [30.0, 140.0, 220.0], [40.0, 90.0, 20.0]
NEAR_TIE = 0.01


@pytest.fixture(scope="module")
def per_channel_model(tmp_path_factory, canary_model):
    """The colour canary behind a per-channel normalization: a real model whose manifest gives
    mean/std per channel (as torchvision-style models do); it undoes them and feeds the canary 0..1."""
    import tensorflow as tf

    canary = tf.saved_model.load(str(canary_model / "saved_model"))

    class PerChannel(tf.Module):
        def __init__(self):
            super().__init__()
            self.canary = canary

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            pixels = image * tf.constant(STD) + tf.constant(MEAN)
            return self.canary.signatures["serving_default"](image=pixels / 255.0)

    root = tmp_path_factory.mktemp("per-channel-model")
    module = PerChannel()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary_model / "dict.txt", root / "dict.txt")
    shutil.copytree(canary_model / "images", root / "images")
    manifest = {"display_name": "canary_per_channel", "input": {"mean": MEAN, "std": STD}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def per_channel_exports(tmp_path_factory, per_channel_model):
    made = {}
    for quantization in ("uint8", "int8", "float32", "float16"):
        destination = tmp_path_factory.mktemp(f"per-channel-{quantization}")
        config = {
            "modelFormat": "tflite",
            "gcsDestination": {"outputUriPrefix": str(destination)},
            "params": {"quantization": quantization},
        }
        result = export_model(per_channel_model, config)
        made[quantization] = Path(result.output_dir), result.report
    return made


@pytest.mark.parametrize("quantization,dtype,zero_point", [("uint8", "uint8", 0), ("int8", "int8", -128)])
def test_integer_exports_take_raw_pixels(per_channel_exports, quantization, dtype, zero_point):
    folder, report = per_channel_exports[quantization]
    metadata = json.loads((folder / "tflite_metadata.json").read_text())
    assert metadata["tensors"]["input"]["dtype"] == dtype
    # Scale 1: the integer fed is the pixel (minus 128 for int8), as MediaPipe feeds it.
    assert metadata["tensors"]["input"]["quantization"] == {"scale": 1.0, "zeroPoint": zero_point}
    assert metadata["input"]["normalizationFoldedIntoGraph"] is True
    assert metadata["input"]["feed"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    embedded = read_metadata((folder / "model.tflite").read_bytes())
    assert (embedded["mean"], embedded["std"]) == ([0.0] * 3, [1.0] * 3)
    check = report["checks"]["verification"]
    assert check["passed"] and check["decided"] - check["agreeing"] <= check["allowed_disagreements"]


def test_raw_pixels_classify_like_the_source(per_channel_exports, per_channel_model):
    """Straight into the interpreter, no preprocessing at all: the uint8 model agrees with the source."""
    from ai_edge_litert.interpreter import Interpreter

    folder, _ = per_channel_exports["uint8"]
    reference = make_reference(read_model(per_channel_model))
    interpreter = Interpreter(model_path=str(folder / "model.tflite"))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    answers = []
    for pixels in reference.images.pixels:
        interpreter.set_tensor(inp["index"], pixels[None])
        interpreter.invoke()
        answers.append(int(interpreter.get_tensor(out["index"])[0].argmax()))
    agree = np.mean(np.array(answers) == reference.scores.argmax(1))
    assert agree >= 0.98, agree


@pytest.mark.parametrize("quantization", ["float32", "float16"])
def test_float_exports_fold_per_channel_normalization(per_channel_exports, quantization):
    folder, report = per_channel_exports[quantization]
    embedded = read_metadata((folder / "model.tflite").read_bytes())
    # One value per channel, the same for all three: MediaPipe refuses per-channel normalization.
    assert embedded["mean"] == [float(np.mean(MEAN))] * 3 and embedded["std"] == [float(np.mean(STD))] * 3
    assert json.loads((folder / "tflite_metadata.json").read_text())["input"]["normalizationFoldedIntoGraph"]
    assert report["checks"]["verification"]["passed"]
    if quantization == "float32":
        assert report["checks"]["verification"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("quantization", ["uint8", "float32", "float16"])
def test_mediapipe_classifies_as_verification_measured(per_channel_exports, per_channel_model, quantization, tmp_path):
    folder, _ = per_channel_exports[quantization]
    mediapipe_agrees_with_verification(folder / "model.tflite", per_channel_model, tmp_path)


def mediapipe_agrees_with_verification(model_file: Path, model_dir: Path, scratch: Path, limit: int = 120) -> int:
    """MediaPipe's top-1 equals the engine's consumer-fed top-1 on every decided image; returns how
    many were compared (at least 90% of them)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    alone = scratch / "model.tflite"  # no dict.txt, no tflite_metadata.json beside it
    shutil.copy(model_file, alone)
    reference = make_reference(read_model(model_dir), limit=limit)
    embedded = read_metadata(alone.read_bytes())
    ours = consumer_scores(TFLiteModel(alone), reference.images.pixels, embedded["mean"], embedded["std"])
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(alone)), max_results=1)
    compared = 0
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for pixels, scores in zip(reference.images.pixels, ours, strict=True):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))
            (top,) = classifier.classify(image).classifications[0].categories
            ranked = np.sort(scores)
            if ranked[-1] - ranked[-2] >= NEAR_TIE:
                assert top.category_name == embedded["labels"][int(scores.argmax())]
                compared += 1
    assert compared >= 0.9 * len(ours)
    return compared


ZOO_IN_MEDIAPIPE = ("mobilenet_v2", "mobilenet_v3_small", "nasnet_mobile", "resnet50", "tf_module", "logits")


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.parametrize("name", ZOO_IN_MEDIAPIPE)
def test_zoo_tflite_exports_in_mediapipe(zoo_model, name, quantization, tmp_path):
    """Every input convention of the zoo (-1..1, 0..255 inside, 0..1, per-channel, tf.Module, logits)."""
    model = zoo_model(name)
    config = {
        "modelFormat": "tflite",
        "gcsDestination": {"outputUriPrefix": str(tmp_path / "out")},
        "params": {"quantization": quantization},
    }
    result = export_model(model, config)
    assert result.report["checks"]["verification"]["passed"]
    mediapipe_agrees_with_verification(Path(result.output_dir) / "model.tflite", model, tmp_path)
