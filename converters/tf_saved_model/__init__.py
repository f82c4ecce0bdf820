"""modelFormat ``tf_saved_model``: the serving SavedModel (``converter``)."""

from converters.tf_saved_model.converter import ServingSavedModelConverter

__all__ = ["ServingSavedModelConverter"]
