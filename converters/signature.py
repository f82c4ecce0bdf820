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
