"""modelFormat ``tflite``: the converter (``converter``), the TFLite metadata it embeds
(``metadata``), and the per-tensor calibration ranges of its integer modes (``calibration_ranges``).
"""

from converters.tflite.converter import TFLiteConverter

__all__ = ["TFLiteConverter"]
