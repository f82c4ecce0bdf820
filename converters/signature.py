"""Loading a SavedModel's serving signature, the one way every converter and check does it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.load_scope import shared
from exporter.core.model_source import SERVING_KEY


@dataclass(frozen=True)
class ServingSignature:
    """The loaded SavedModel and its ``serving_default`` function.

    The function holds only a weak reference to the loaded object's variables, so the two are
    kept together: the signature stays callable as long as this object lives.
    """

    loaded: Any
    function: Any

    def __call__(self, **inputs):
        return self.function(**inputs)


def load_serving_signature(saved_model_dir: str | Path) -> ServingSignature:
    """The folder's serving signature; loaded once per ``shared_loads()`` scope."""

    def load() -> ServingSignature:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(saved_model_dir))
        return ServingSignature(loaded, loaded.signatures[SERVING_KEY])

    return shared(("serving signature", str(Path(saved_model_dir).resolve())), load)


def call_model(serving: ServingSignature, source, model_input):
    """The source's class scores for a float32 model input [N, H, W, 3], inside a tf.function or eagerly.

    A signature that takes uint8 pixels gets the values rounded into 0..255 (every caller feeds it
    whole pixel values, so nothing is lost), and of several outputs only the scores are taken: the
    functions built on this convert as one float input and one output whatever the signature is.
    """
    import tensorflow as tf

    if source.input_dtype != "float32":
        model_input = tf.cast(tf.clip_by_value(tf.round(model_input), 0.0, 255.0), source.input_dtype)
    return serving.function(**{source.input_key: model_input})[source.output_key]
