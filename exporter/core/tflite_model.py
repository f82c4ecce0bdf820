"""Running a .tflite model in ai_edge_litert (the successor of tflite_runtime).

Quantized inputs are fed by quantizing the normalized float input with the input tensor's own
scale and zero point; quantized outputs are dequantized the same way, so every mode is compared
on the same float scale as the source.

It lives in the core, not with the tflite converter: the converter's verification and
``exporter predict`` share it, and predict must not import the converters package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TFLiteModel:
    """A loaded .tflite classifier: float inputs in, float scores out, one image at a time."""

    def __init__(self, path: str | Path, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def input_quantization(self) -> tuple[float, int]:
        return self.input["quantization"]

    def _to_input(self, image: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self.input["quantization"]
            info = np.iinfo(dtype)
            quantized = np.round(image / scale + zero_point)
            return np.clip(quantized, info.min, info.max).astype(dtype)[None]
        return image.astype(dtype)[None]

    def _from_output(self, raw: np.ndarray) -> np.ndarray:
        if np.issubdtype(self.output["dtype"], np.integer):
            scale, zero_point = self.output["quantization"]
            return (raw.astype(np.float32) - zero_point) * scale
        return raw.astype(np.float32)

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """Scores [C] for one normalized float image [H, W, 3]."""
        self.interpreter.set_tensor(self.input["index"], self._to_input(image))
        self.interpreter.invoke()
        return self._from_output(self.interpreter.get_tensor(self.output["index"])[0])

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Scores [N, C] for normalized float images [N, H, W, 3]."""
        return np.stack([self.predict_one(image) for image in images])
