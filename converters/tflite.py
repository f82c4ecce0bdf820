"""modelFormat ``tflite``: the TFLite converter, from the source's serving signature.

The batch is fixed to 1 through a concrete function (a mobile classifier takes one image; the
Edge TPU compiler and MediaPipe want static shapes). ``uint8`` is full-integer quantization with
uint8 input and output, as AutoML's QUANTIZED_UINT8 exports; its representative dataset is the
model's calibration images plus one gradient image spanning 0..255, so the input's quantization
covers the whole pixel range (scale 1, zero point 0 for a model that takes 0..255).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from converters.base import Converter, register
from converters.tflite_runtime import TFLiteModel
from converters.verification import Tolerance, compare
from exporter.images import load_image_set, normalize
from exporter.model_source import SERVING_KEY

MODEL_FILE = "model.tflite"
LABELS_FILE = "dict.txt"
METADATA_FILE = "tflite_metadata.json"

TOLERANCES = {
    # float32 is the same arithmetic: every decided image agrees, scores within rounding.
    "float32": Tolerance(max_disagreement_fraction=0.0, max_abs_diff=1e-4),
    # uint8 output has a step of 1/256; measured on 360 held-out digits, 2 flipped images.
    "uint8": Tolerance(max_disagreement_fraction=0.02, max_abs_diff=None),
}

INFERENCE_TYPE = {"uint8": "QUANTIZED_UINT8", "float32": "FLOAT"}


def gradient_image(height: int, width: int) -> np.ndarray:
    """uint8 RGB image whose every channel runs from 0 to 255: anchors the input range."""
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    image = np.broadcast_to(ramp[None, :, None], (height, width, 3))
    return image.round().astype(np.uint8)


def representative_inputs(source, count: int) -> np.ndarray:
    """Normalized float calibration inputs: `count` calibration images, then the gradient image."""
    images = load_image_set(
        source.calibration_dir, source.labels, source.height, source.width, limit=count,
        purpose="calibration",
    )
    pixels = np.concatenate([images.pixels, gradient_image(source.height, source.width)[None]])
    return normalize(pixels, source.mean, source.std)


def convert_to_tflite(source, quantization: str, calibration_count: int) -> bytes:
    """The TFLite flatbuffer of the source's serving signature, batch fixed to 1."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(source.saved_model_dir))
    serve = loaded.signatures[SERVING_KEY]

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, source.height, source.width, 3], tf.float32, name=source.input_key)
        ]
    )
    def single_image(image):
        return {source.output_key: serve(**{source.input_key: image})[source.output_key]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [single_image.get_concrete_function()], loaded
    )
    if quantization == "uint8":
        inputs = representative_inputs(source, calibration_count)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in inputs)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def metadata_json(model: TFLiteModel, quantization: str) -> dict:
    """tflite_metadata.json: AutoML's object-detection keys, where they apply to a classifier."""

    def tensor(details: dict) -> dict:
        scale, zero_point = details["quantization"]
        return {
            "name": details["name"],
            "shape": [int(d) for d in details["shape"]],
            "dtype": np.dtype(details["dtype"]).name,
            "quantization": {"scale": float(scale), "zeroPoint": int(zero_point)},
        }

    return {
        "inferenceType": INFERENCE_TYPE[quantization],
        "inputShape": [int(d) for d in model.input["shape"]],
        "inputTensor": model.input["name"],
        "outputTensorRepresentation": ["scores"],
        "outputTensors": [model.output["name"]],
        "tensors": {"input": tensor(model.input), "output": tensor(model.output)},
    }


@register("tflite")
class TFLiteConverter(Converter):
    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        quantization = params["quantization"]
        flatbuffer = convert_to_tflite(source, quantization, int(params["calibration_count"]))
        model_path = workdir / MODEL_FILE
        model_path.write_bytes(flatbuffer)
        labels_path = workdir / LABELS_FILE
        labels_path.write_text("\n".join(source.labels) + "\n", encoding="utf-8")
        metadata_path = workdir / METADATA_FILE
        metadata = metadata_json(TFLiteModel(model_path), quantization)
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
        return [model_path, labels_path, metadata_path]

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        quantization = params["quantization"]
        model = TFLiteModel(workdir / MODEL_FILE)
        scores = model.predict(reference.inputs)
        return compare(
            "ai_edge_litert", reference, scores, TOLERANCES[quantization],
            what=f"{MODEL_FILE} ({quantization})",
        )
