"""modelFormat ``openvino`` (an extension of this engine beyond AutoML's six): the converter
(``converter``); its artifact runs through exporter/core/openvino_model.py.
"""

from converters.openvino.converter import OpenVINOConverter

__all__ = ["OpenVINOConverter"]
