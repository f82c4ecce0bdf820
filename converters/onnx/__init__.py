"""modelFormat ``onnx`` (an extension of this engine beyond AutoML's six): the converter
(``converter``); its artifact runs through exporter/core/onnx_model.py.
"""

from converters.onnx.converter import ONNXConverter

__all__ = ["ONNXConverter"]
