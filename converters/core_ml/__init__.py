"""modelFormat ``core_ml``: the converter (``converter``)."""

from converters.core_ml.converter import CoreMLConverter

__all__ = ["CoreMLConverter"]
