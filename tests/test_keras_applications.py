"""Every keras.applications classifier, untrained at a small input, exported to tflite float32 by the
engine and verified in ai_edge_litert against the source with exact agreement.

The op policy's own test (test_op_policy.py) checks every application's graph; this one converts
them. The suite exports the smallest application of two families the zoo does not train in the
suite (IN_SUITE); `--zoo` (make zoo-test) exports all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter.run import export_model
from exporter.sample_models import DIGIT_LABELS, _write_images, digits_pixels

SIZE = 32
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}  # the smallest each takes
HELDOUT = 60
# The smallest application of each family: what the suite exports.
FAMILY_SMALLEST = (
    "ConvNeXtTiny",
    "DenseNet121",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "NASNetMobile",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "Xception",
)


# ConvNeXt (the zoo trains it only with --zoo) and Xception, a family the zoo has no model of:
# their smallest application the suite exports (about 30 s each on two cores, measured with other
# work running); the rest run with --zoo, to keep the suite within its time.
IN_SUITE = ("ConvNeXtTiny", "Xception")


def applications() -> list[str]:
    import keras

    return sorted(n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n)))


def test_the_families_cover_every_application():
    """Every application is the smallest of its family or shares a family prefix with one."""
    names = applications()
    assert set(FAMILY_SMALLEST) <= set(names)
    prefixes = {"ConvNeXt", "DenseNet", "EfficientNetB", "EfficientNetV2", "ResNet", "VGG", "NASNet", "MobileNet"}
    for name in names:
        assert name in FAMILY_SMALLEST or any(name.startswith(p) for p in prefixes), name


def decisive(model, images: np.ndarray) -> None:
    """Untrained, an application's scores are all but equal on every image (each a near-tie, left out
    of the agreement count): BatchNorm's moving statistics set to the images' own, as training would
    leave them, spread them, so the check has decided images to compare."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for norm in norms:
        norm.momentum = 0.0  # the moving statistics become this batch's
    if norms:
        model(images, training=True)


def untrained_application(name: str, folder: Path) -> Path:
    """A model folder: the application (weights=None, 10 classes) saved with its serving signature,
    the digits' labels and held-out digit images at its input size."""
    import keras
    import tensorflow as tf

    size = MIN_SIZE.get(name, SIZE)
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=len(DIGIT_LABELS))
    pixels, labels = digits_pixels(size)
    picked = np.linspace(0, len(pixels) - 1, HELDOUT).astype(int)
    decisive(model, pixels[picked].astype(np.float32))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: {"probabilities": model(image, training=False)},
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="image")],
    )
    archive.write_out(str(folder / "saved_model"), verbose=False)
    keras.backend.clear_session()
    (folder / "dict.txt").write_text("\n".join(DIGIT_LABELS) + "\n")
    _write_images(folder / "images", pixels[picked], labels[picked], DIGIT_LABELS, (size,))
    return folder


def cases() -> list:
    return [pytest.param(name, id=name, marks=() if name in IN_SUITE else pytest.mark.zoo) for name in applications()]


@pytest.mark.slow
@pytest.mark.parametrize("name", cases())
def test_an_application_exports_to_tflite_float32_in_exact_agreement(name, tmp_path):
    folder = untrained_application(name, tmp_path / name)
    result = export_model(
        folder,
        {
            "modelFormat": "tflite",
            "gcsDestination": {"outputUriPrefix": str(tmp_path / "out")},
            "params": {"quantization": "float32"},
        },
        images=folder / "images",  # <label>/ folders of held-out digits, for calibration and checks alike
    )
    check = result.report["checks"]["verification"]
    assert check["images"] == HELDOUT and check["decided"] > 0, check
    assert check["agreeing"] == check["decided"] and check["max_abs_diff"] <= 1e-4, check
