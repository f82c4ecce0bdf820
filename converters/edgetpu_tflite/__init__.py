"""modelFormat ``edgetpu_tflite``: builds on ``tflite``; the converter (``converter``) and the
Edge TPU's op limits (``compat``, from ``data/edgetpu_ops.json``).
"""

from converters.edgetpu_tflite.converter import EdgeTPUConverter

__all__ = ["EdgeTPUConverter"]
