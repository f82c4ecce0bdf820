"""Real sample models, trained offline from data that ships with the libraries.

* ``make_digits_model``: a MobileNetV2 (``weights=None``) trained on scikit-learn's bundled
  digits, made RGB and upscaled. Keras sets BatchNorm momentum 0.999, with which the moving
  statistics lag far behind ten epochs of training and held-out accuracy stays at chance; 0.9
  fixes that. Normalization (0..255 -> -1..1) is inside the graph, so the model takes 0..255.
* ``make_colour_canary``: a tiny network whose class depends on hue alone. Its normalization
  (0..1) is outside the graph, so any RGB/BGR swap, wrong scaling or channel order in an export
  changes its answers at once.

Both write a complete model folder: ``saved_model/``, ``dict.txt``, ``manifest.json`` and
``images/{calibration,heldout}/<label>/`` with JPEG and PNG images at sizes other than the input.
"""

from __future__ import annotations

import colorsys
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

DIGIT_LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HUE_LABELS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # 60 degrees each, red at 0


def _seed_everything(seed: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _save_serving(model, folder: Path, size: int, input_name: str = "image") -> None:
    """A SavedModel with one signature, serving_default: image [N,size,size,3] -> probabilities."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: {"probabilities": model(image, training=False)},
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=input_name)],
    )
    archive.write_out(str(folder), verbose=False)


def _write_images(
    folder: Path, pixels: np.ndarray, labels: np.ndarray, names: tuple[str, ...], sizes: tuple[int, ...]
) -> None:
    """Images as files under folder/<label>/, alternating PNG and JPEG and the given sizes."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        target = folder / names[label]
        target.mkdir(parents=True, exist_ok=True)
        side = sizes[i % len(sizes)]
        picture = Image.fromarray(image).resize((side, side), Image.BILINEAR)
        if i % 2:
            picture.save(target / f"{i:04d}.jpg", quality=95)
        else:
            picture.save(target / f"{i:04d}.png")


def _write_folder(out_dir: Path, build) -> Path:
    """Build into a temporary sibling folder, then move it into place whole."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        build(work)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _manifest(display_name: str, size: int, input_range: str, accuracy: float) -> dict:
    return {
        "display_name": display_name,
        "model_type": "mobile-versatile-1",
        "saved_model": "saved_model",
        "labels": "dict.txt",
        "input": {"height": size, "width": size, "range": input_range},
        "calibration_images": "images/calibration",
        "heldout_images": "images/heldout",
        "training": {"heldout_accuracy": round(accuracy, 4)},
    }


def digits_pixels(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits as uint8 RGB [N, size, size, 3] and their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    upscaled = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in gray])
    return np.repeat(upscaled[..., None], 3, axis=-1), digits.target.astype(np.int64)


def make_digits_model(out_dir: str | Path, *, size: int = 96, epochs: int = 5, seed: int = 0) -> dict:
    """Train the MobileNetV2 digits classifier and write its model folder; returns its manifest."""
    import keras
    from sklearn.model_selection import train_test_split

    _seed_everything(seed)
    pixels, labels = digits_pixels(size)
    train_x, held_x, train_y, held_y = train_test_split(
        pixels, labels, test_size=360, stratify=labels, random_state=seed
    )
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=len(DIGIT_LABELS))
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    inputs = keras.Input((size, size, 3), name="image")
    outputs = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(train_x.astype(np.float32), train_y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    accuracy = float(model.evaluate(held_x.astype(np.float32), held_y, verbose=0)[1])
    manifest = _manifest("digits_mobilenetv2", size, "0..255", accuracy)

    def build(work: Path) -> None:
        _save_serving(model, work / "saved_model", size)
        (work / "dict.txt").write_text("\n".join(DIGIT_LABELS) + "\n")
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        off_sizes = tuple(s for s in (64, 80, 120, 150) if s != size)
        _write_images(work / "images/heldout", held_x, held_y, DIGIT_LABELS, off_sizes)
        _write_images(work / "images/calibration", train_x[:200], train_y[:200], DIGIT_LABELS, off_sizes)

    _write_folder(Path(out_dir), build)
    return manifest


def hue_images(count: int, size: int, rng: np.random.Generator, margin_degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images of one colour each, labelled by hue; hues within `margin` of a boundary are skipped."""
    pixels, labels = [], []
    while len(labels) < count:
        hue = rng.uniform(0, 360)
        offset = (hue + 30) % 60  # distance into the 60-degree bin centred on a label
        if offset < margin_degrees or offset > 60 - margin_degrees:
            continue
        saturation, value = rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0)
        rgb = np.array(colorsys.hsv_to_rgb(hue / 360, saturation, value)) * 255
        image = rgb + rng.normal(0, 6, (size, size, 3))
        pixels.append(np.clip(image, 0, 255).round().astype(np.uint8))
        labels.append(int((hue + 30) % 360 // 60))
    return np.stack(pixels), np.array(labels, dtype=np.int64)


def make_colour_canary(out_dir: str | Path, *, size: int = 32, seed: int = 0) -> dict:
    """Train the hue canary and write its model folder; returns its manifest."""
    import keras

    _seed_everything(seed)
    rng = np.random.default_rng(seed)
    train_x, train_y = hue_images(3000, size, rng, margin_degrees=2)
    held_x, held_y = hue_images(300, size, rng, margin_degrees=8)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(32, 1, activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(HUE_LABELS), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    scaled = train_x.astype(np.float32) / 255.0  # the canary expects 0..1 (manifest range)
    model.fit(scaled, train_y, batch_size=64, epochs=40, verbose=0, shuffle=True)
    accuracy = float(model.evaluate(held_x.astype(np.float32) / 255.0, held_y, verbose=0)[1])
    manifest = _manifest("colour_canary", size, "0..1", accuracy)

    def build(work: Path) -> None:
        _save_serving(model, work / "saved_model", size)
        (work / "dict.txt").write_text("\n".join(HUE_LABELS) + "\n")
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _write_images(work / "images/heldout", held_x, held_y, HUE_LABELS, (20, 48))
        _write_images(work / "images/calibration", train_x[:100], train_y[:100], HUE_LABELS, (20, 48))

    _write_folder(Path(out_dir), build)
    return manifest
