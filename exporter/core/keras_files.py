"""Keras model files (``model.keras``, legacy ``model.h5``) turned into a SavedModel the engine reads.

Users hold trained Keras models as files; the engine exports the model's inference function
(``training=False``, so augmentation and dropout layers are off) into a SavedModel with one
``serving_default`` signature, in a private folder of its own, and exports that. The file is read
with Keras's ``safe_mode`` (no Python code from the file is run: a ``Lambda`` layer's bytecode is
refused) and ``compile=False`` (no optimizer or loss objects are rebuilt). The SavedModel made here
then goes through the same op policy as any other.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exporter.core.errors import Code, ExportError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SCORES_OUTPUT = "scores"


def is_keras_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in KERAS_SUFFIXES


def display_name_for(path: Path) -> str:
    """AutoML's display-name rule applied to the file's name: other characters become `_`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)[:32]
    return name if name[:1].isalpha() else ("m" + name)[:32]


@contextmanager
def saved_model_folder(path: str | Path) -> Iterator[Path]:
    """A private model folder holding ``saved_model/`` and ``manifest.json`` made from the Keras
    file at `path`; removed when the block ends."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(Code.NOT_FOUND, f"model file {str(path)!r} does not exist")
    with tempfile.TemporaryDirectory(prefix="keras-model-") as scratch:  # mode 0700: the user's alone
        name = display_name_for(path)
        folder = Path(scratch) / name
        folder.mkdir()
        _export_saved_model(path, folder / "saved_model")
        from importlib.metadata import version

        manifest = {"display_name": name, "converted_from": f"{path.name} (Keras {version('keras')})"}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        yield folder


def _export_saved_model(path: Path, target: Path) -> None:
    import keras
    import tensorflow as tf

    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:  # Keras raises ValueError, TypeError, OSError... for a file it cannot read
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(
            Code.INVALID_ARGUMENT, f"{path.name} is not a Keras model Keras can load safely: {first}"
        ) from None
    # A subclassed model saved before it was called has no inputs or outputs to read a signature from.
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(
            Code.INVALID_ARGUMENT,
            f"{path.name}: the Keras model must take one image and return one tensor of class scores; it takes "
            f"{len(inputs)} inputs and returns {len(outputs)} outputs",
        )
    shape, dtype = list(inputs[0].shape), inputs[0].dtype
    spec = tf.TensorSpec([None, *shape[1:]], dtype, name="image")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: {SCORES_OUTPUT: model(image, training=False)},
        input_signature=[spec],
    )
    archive.write_out(str(target), verbose=False)
