"""modelFormat ``tflite``: the TFLite converter, from the source's serving signature.

The batch is fixed to 1 through a concrete function (a mobile classifier takes one image; the
Edge TPU compiler and MediaPipe want static shapes). ``uint8`` and ``int8`` are full-integer
quantization with integer input and output (``uint8`` as AutoML's QUANTIZED_UINT8 exports);
their representative dataset is the model's calibration images plus one gradient image spanning
0..255, so the input's quantization covers the whole pixel range (scale 1, zero point 0 for a
uint8 model that takes 0..255). ``float16`` and ``dynamic_range`` need no calibration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.base import Converter, register
from converters.signature import load_serving_signature
from converters.tflite_metadata import embed_metadata
from converters.tflite_runtime import TFLiteModel
from converters.verification import Tolerance, compare
from exporter.core.images import load_image_set, normalize
from exporter.core.labels import write_labels
from exporter.core.report import engine_version

MODEL_FILE = "model.tflite"
METADATA_FILE = "tflite_metadata.json"


@dataclass(frozen=True)
class Mode:
    """One value of the ``quantization`` param: how to convert and how close it must stay."""

    inference_type: str  # tflite_metadata.json's inferenceType
    tolerance: Tolerance
    needs_calibration: bool
    io_type: str | None = None  # integer input/output type of a full-integer model


MODES = {
    # The same arithmetic as the source: every decided image agrees, scores within rounding.
    "float32": Mode("FLOAT", Tolerance(0.0, max_abs_diff=1e-4), needs_calibration=False),
    # Weights stored as float16, computed in float32: rounding of the weights only.
    "float16": Mode("FLOAT", Tolerance(0.01, max_abs_diff=0.05), needs_calibration=False),
    # int8 weights, activations quantized on the fly; no calibration data.
    "dynamic_range": Mode("FLOAT", Tolerance(0.02, max_abs_diff=None), needs_calibration=False),
    # Full-integer: output steps of 1/256; on 360 held-out digits 2 images flipped.
    "uint8": Mode("QUANTIZED_UINT8", Tolerance(0.02, max_abs_diff=None), True, io_type="uint8"),
    "int8": Mode("QUANTIZED_INT8", Tolerance(0.02, max_abs_diff=None), True, io_type="int8"),
}


def gradient_image(height: int, width: int) -> np.ndarray:
    """uint8 RGB image whose every channel runs from 0 to 255: anchors the input range."""
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    image = np.broadcast_to(ramp[None, :, None], (height, width, 3))
    return image.round().astype(np.uint8)


def representative_inputs(source, count: int) -> np.ndarray:
    """Normalized float calibration inputs: `count` calibration images, then the gradient image."""
    images = load_image_set(
        source.calibration_dir,
        source.labels,
        source.height,
        source.width,
        limit=count,
        purpose="calibration",
    )
    pixels = np.concatenate([images.pixels, gradient_image(source.height, source.width)[None]])
    return normalize(pixels, source.mean, source.std)


def convert_to_tflite(source, quantization: str, calibration_count: int) -> bytes:
    """The TFLite flatbuffer of the source's serving signature, batch fixed to 1."""
    import tensorflow as tf

    serving = load_serving_signature(source.saved_model_dir)
    loaded, serve = serving.loaded, serving.function

    @tf.function(
        input_signature=[tf.TensorSpec([1, source.height, source.width, 3], tf.float32, name=source.input_key)]
    )
    def single_image(image):
        return {source.output_key: serve(**{source.input_key: image})[source.output_key]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([single_image.get_concrete_function()], loaded)
    mode = MODES[quantization]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode.needs_calibration:
        inputs = representative_inputs(source, calibration_count)
        converter.representative_dataset = lambda: ([x[None]] for x in inputs)
    if mode.io_type is not None:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, mode.io_type)
        converter.inference_output_type = getattr(tf, mode.io_type)
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
        "inferenceType": MODES[quantization].inference_type,
        "inputShape": [int(d) for d in model.input["shape"]],
        "inputTensor": model.input["name"],
        "outputTensorRepresentation": ["scores"],
        "outputTensors": [model.output["name"]],
        "tensors": {"input": tensor(model.input), "output": tensor(model.output)},
    }


@register("tflite")
class TFLiteConverter(Converter):
    libraries = ("tensorflow",)

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        quantization = params["quantization"]
        flatbuffer = convert_to_tflite(source, quantization, int(params["calibration_count"]))
        flatbuffer = embed_metadata(
            flatbuffer,
            source,
            description=f"{source.display_name}: image classifier, {quantization} TFLite export",
            version=engine_version(),
        )
        model_path = workdir / MODEL_FILE
        model_path.write_bytes(flatbuffer)
        labels_path = write_labels(workdir, source.labels)
        metadata_path = workdir / METADATA_FILE
        metadata = metadata_json(TFLiteModel(model_path), quantization)
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
        return [model_path, labels_path, metadata_path]

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        quantization = params["quantization"]
        model = TFLiteModel(workdir / MODEL_FILE)
        scores = model.predict(reference.inputs)
        return {
            "verification": compare(
                "ai_edge_litert",
                reference,
                scores,
                MODES[quantization].tolerance,
                what=f"{MODEL_FILE} ({quantization})",
            )
        }
