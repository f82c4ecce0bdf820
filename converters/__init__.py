"""The converter registry: one converter per modelFormat of ``exporter.core.formats.FORMATS``.

Importing this package registers every converter; heavy libraries are imported inside the
conversion steps, never here.
"""

from converters import coreml, docker_image, edgetpu, tf_saved_model, tfjs, tflite  # noqa: F401  (each module registers itself)
from converters.base import REGISTRY, Converter
from exporter.core.formats import FORMAT_NAMES, FORMATS, format_row

__all__ = ["REGISTRY", "Converter", "FORMATS", "FORMAT_NAMES", "format_row"]
