"""The converter registry: one converter per modelFormat of ``exporter.core.formats.FORMATS``.

Each format is a package of its own (``converters/<modelFormat>/``: its converter and that format's
helpers); the modules here are what formats share (the converter interface, the serving signature,
verification, output scores, the input plan, the quantization budget). A format imports another
only when its row ``builds_on`` it (the import-linter contract in pyproject.toml). Importing this
package registers every converter; heavy libraries are imported inside the conversion steps, never
here.
"""

# Each format's package registers its converter when imported.
from converters import core_ml, docker, edgetpu_tflite, onnx, openvino, tf_js, tf_saved_model, tflite  # noqa: F401
from converters.base import REGISTRY, Converter
from exporter.core.formats import FORMAT_NAMES, FORMATS, format_row

__all__ = ["REGISTRY", "Converter", "FORMATS", "FORMAT_NAMES", "format_row"]
