"""What a .tflite export takes as input, and feeding it as its consumers do.

MediaPipe's ImageClassifier (and any consumer of AutoML's QUANTIZED_UINT8 models) feeds an image
tensor by its type: a uint8 input gets the raw 0..255 pixels, an int8 input the pixels minus 128,
and a float input ``(pixel - mean) / std`` with the single mean and std of the metadata's
NormalizationOptions (it refuses per-channel values). So:

* a ``uint8`` / ``int8`` export takes raw pixels whatever the model's normalization: the
  normalization is folded into the graph before quantizing, and its metadata says mean 0, std 1;
* a float export of a model with one mean and std keeps the model's own input;
* a float export of a model with per-channel mean/std takes ``(pixel - m) / s`` with one m and s
  (the channels' averages, so the values stay in the same range), and the graph turns that into
  the model's per-channel normalization.

Verification feeds the artifact the same way (``consumer_scores``), from the metadata embedded in
the model file, so what it checks is what a consumer gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InputPlan:
    """The model's own normalization and the one the export's consumers apply (its metadata's)."""

    model_mean: tuple[float, float, float]
    model_std: tuple[float, float, float]
    feed_mean: tuple[float, float, float]
    feed_std: tuple[float, float, float]

    @property
    def folded(self) -> bool:
        """Whether the graph converts the fed input into the model's own (a no-op otherwise)."""
        return not (np.allclose(self.feed_mean, self.model_mean) and np.allclose(self.feed_std, self.model_std))

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) per channel with model_input = fed * a + b."""
        feed_mean, feed_std = np.array(self.feed_mean), np.array(self.feed_std)
        model_mean, model_std = np.array(self.model_mean), np.array(self.model_std)
        return (feed_std / model_std).astype(np.float32), ((feed_mean - model_mean) / model_std).astype(np.float32)

    def to_model_input(self, fed):
        """TensorFlow ops: the model's input from the fed tensor (the input itself when not folded)."""
        if not self.folded:
            return fed
        scale, offset = self.affine()
        return fed * scale + offset

    def feed(self, pixels: np.ndarray) -> np.ndarray:
        """Float inputs as a consumer makes them from 0..255 pixels (for calibration and checks)."""
        return (
            (pixels.astype(np.float32) - np.array(self.feed_mean, np.float32)) / np.array(self.feed_std, np.float32)
        ).astype(np.float32)

    def describe(self) -> dict:
        return {
            "feed": {"mean": list(self.feed_mean), "std": list(self.feed_std)},
            "model": {"mean": list(self.model_mean), "std": list(self.model_std)},
            "normalizationFoldedIntoGraph": self.folded,
        }


def input_plan(source, integer: bool) -> InputPlan:
    """How the export of `source` takes its image; `integer` for uint8/int8 input tensors."""
    model_mean, model_std = tuple(source.mean), tuple(source.std)
    if integer:
        feed_mean, feed_std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # raw pixels
    elif len(set(model_mean)) == 1 and len(set(model_std)) == 1:
        feed_mean, feed_std = model_mean, model_std
    else:  # per-channel: one value each, as MediaPipe takes them
        feed_mean = (float(np.mean(model_mean)),) * 3
        feed_std = (float(np.mean(model_std)),) * 3
    return InputPlan(model_mean, model_std, feed_mean, feed_std)


def consumer_tensor(dtype, pixels: np.ndarray, mean, std) -> np.ndarray:
    """The input tensor MediaPipe builds from uint8 RGB `pixels` for an input of `dtype`."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return pixels.astype(np.uint8)
    if dtype == np.int8:
        return (pixels.astype(np.int16) - 128).astype(np.int8)
    if len(set(mean)) != 1 or len(set(std)) != 1:
        raise ValueError(f"per-channel normalization (mean {list(mean)}, std {list(std)}) is not what MediaPipe takes")
    return ((pixels.astype(np.float32) - float(mean[0])) / float(std[0])).astype(dtype)


def consumer_scores(model, pixels: np.ndarray, mean, std) -> np.ndarray:
    """Float scores [N, C] of a loaded TFLiteModel fed 0..255 `pixels` [N, H, W, 3] as MediaPipe feeds it."""
    interpreter, inp, out = model.interpreter, model.input, model.output
    scores = []
    for image in pixels:
        interpreter.set_tensor(inp["index"], consumer_tensor(inp["dtype"], image, mean, std)[None])
        interpreter.invoke()
        raw = interpreter.get_tensor(out["index"])[0]
        if np.issubdtype(out["dtype"], np.integer):
            scale, zero_point = out["quantization"]
            raw = (raw.astype(np.float32) - zero_point) * scale
        scores.append(raw.astype(np.float32))
    return np.stack(scores)
