"""Classify image files with an exported artifact, for a user's quick check.

Takes a ``.tflite``, ``.onnx`` or OpenVINO ``.xml`` file (labels and normalization from its
embedded metadata), an export folder holding one, a serving SavedModel folder (``image_bytes`` in, ``scores`` and ``labels`` out), or a
tf_js export folder (run in Node.js; ``dict.txt`` beside ``model.json``, and the input the export
took from its ``export_report.json``). Every prediction says what its scores are, as the artifact
states it: the name of the tflite output tensor's metadata (``probability`` or ``logits``), the
onnx model's ``scores`` metadata entry, the OpenVINO IR's ``rt_info``, the
serving SavedModel's ``assets/scores.txt``, ``model.json``'s ``userDefinedMetadata.scores``. An
artifact that states none of them gets ``scores`` None, not a guess.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.core.errors import Code, ExportError


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[str, float]]  # (label, score), best first
    scores: str | None = None  # "probabilities" or "logits", as the artifact states; None: it does not


@dataclass(frozen=True)
class Classifier:
    """An artifact ready to classify: image paths -> (scores [N, C], labels), and what the scores are."""

    classify: Callable[[list[Path]], tuple[np.ndarray, list[str]]]
    scores: str | None


def _tflite_classifier(path: Path) -> Classifier:
    # Only what a plain ai_edge_litert script imports (`exporter predict` should answer about as fast):
    # not the converters package, whose __init__ registers every converter and builds the manifest's
    # pydantic models, more time than the rest of the command; nor MediaPipe, whose generated schema
    # classes took seconds and hundreds of MB to import for four fields of metadata that the
    # flatbuffers runtime reads alone.
    from exporter.core.images import load_pixels, normalize
    from exporter.core.tflite_metadata_reader import read_tflite_metadata
    from exporter.core.tflite_model import TFLiteModel

    metadata = read_tflite_metadata(path.read_bytes())
    if metadata is None:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"{path.name} has no embedded TFLite metadata: its labels and input normalization are "
            "unknown (exports of this engine always embed them)",
        )
    if metadata["mean"] is None or metadata["std"] is None:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"{path.name}'s TFLite metadata states no input normalization (NormalizationOptions of "
            "its input tensor): the values it takes are unknown",
        )
    model = TFLiteModel(path)
    _, height, width, _ = (int(d) for d in model.input["shape"])

    def classify(images: list[Path]) -> tuple[np.ndarray, list[str]]:
        pixels = np.stack([load_pixels(image, height, width) for image in images])
        return model.predict(normalize(pixels, metadata["mean"], metadata["std"])), metadata["labels"]

    return Classifier(classify, metadata["scores"])


def _serving_classifier(folder: Path) -> Classifier:
    import tensorflow as tf

    from converters.output_scores import described_kind
    from converters.signature import load_serving_signature
    from converters.tf_saved_model.converter import SCORES_FILE

    serve = load_serving_signature(folder)
    stated = folder / "assets" / SCORES_FILE

    def classify(images: list[Path]) -> tuple[np.ndarray, list[str]]:
        result = serve(
            image_bytes=tf.constant([image.read_bytes() for image in images]),
            key=tf.constant([image.name for image in images]),
        )
        return result["scores"].numpy(), [s.decode() for s in result["labels"].numpy()[0]]

    return Classifier(classify, described_kind(stated.read_text()) if stated.is_file() else None)


def _tfjs_classifier(folder: Path) -> Classifier:
    from converters.tf_js.converter import AUTOML_SIZE, BACKENDS, scores_kind
    from converters.tf_js.node_runtime import BackendRefused, tfjs_predict
    from exporter.core.images import load_pixels, normalize
    from exporter.core.labels import LABELS_FILE, parse_labels
    from exporter.core.report import REPORT_FILE

    report_path, labels_path = folder / REPORT_FILE, folder / LABELS_FILE
    for needed in (report_path, labels_path):
        if not needed.is_file():
            raise ExportError(
                Code.FAILED_PRECONDITION,
                f"{folder.name} holds model.json but no {needed.name}: predict takes a tf_js export folder "
                f"as the engine writes it ({LABELS_FILE} for the labels, {REPORT_FILE} for the input it takes)",
            )
    report = json.loads(report_path.read_text())
    model_input = report["model"]["input"]
    labels = parse_labels(labels_path.read_text())
    automl = report.get("params", {}).get("input_contract") == "automl"

    def classify(images: list[Path]) -> tuple[np.ndarray, list[str]]:
        if automl:  # AutoML's tf_js input: a 224x224 image scaled to [-1, 1]
            pixels = np.stack([load_pixels(image, AUTOML_SIZE, AUTOML_SIZE) for image in images])
            inputs = pixels.astype(np.float32) / 127.5 - 1.0
        else:
            _, height, width, _ = model_input["shape"]
            pixels = np.stack([load_pixels(image, height, width) for image in images])
            inputs = normalize(pixels, model_input["mean"], model_input["std"])
        refusals = []
        for backend in BACKENDS:  # as the export's verification: wasm, then cpu where wasm refuses
            try:
                return tfjs_predict(folder, inputs, backend)[0], labels
            except BackendRefused as refusal:
                refusals.append(f"{backend}: {refusal.reason}")
        raise ExportError(Code.FAILED_PRECONDITION, f"no tfjs backend runs the model ({'; '.join(refusals)})")

    return Classifier(classify, scores_kind(folder))


def _stated(path: Path, metadata: dict, where: str) -> dict:
    """`metadata` when it states the labels and the input's normalization, else the error."""
    missing = [key for key in ("labels", "image_mean", "image_std") if key not in metadata]
    if missing:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"{path.name} states no {', '.join(missing)} in its {where}: its labels or input "
            "normalization are unknown (exports of this engine always write them)",
        )
    return metadata


def _onnx_classifier(path: Path) -> Classifier:
    from exporter.core import onnx_model
    from exporter.core.images import load_pixels

    metadata = _stated(path, onnx_model.read_metadata(path), "metadata_props")
    run = onnx_model.session(path)
    _, height, width, _ = run.get_inputs()[0].shape

    def classify(images: list[Path]) -> tuple[np.ndarray, list[str]]:
        pixels = np.stack([load_pixels(image, height, width) for image in images])
        return onnx_model.scores(run, pixels, metadata["image_mean"], metadata["image_std"]), metadata["labels"]

    scores = metadata.get("scores")
    return Classifier(classify, scores if scores in ("probabilities", "logits") else None)


def _openvino_classifier(path: Path) -> Classifier:
    from exporter.core import openvino_model
    from exporter.core.images import load_pixels

    model = openvino_model.read_model(path)
    metadata = _stated(path, openvino_model.read_metadata(model), "rt_info")
    compiled = openvino_model.compile_model(model, precision=metadata.get("inference_precision"))
    _, height, width, _ = (dim.get_length() if dim.is_static else 0 for dim in model.inputs[0].get_partial_shape())

    def classify(images: list[Path]) -> tuple[np.ndarray, list[str]]:
        pixels = np.stack([load_pixels(image, height, width) for image in images])
        return openvino_model.scores(compiled, pixels, metadata["image_mean"], metadata["image_std"]), metadata[
            "labels"
        ]

    scores = metadata.get("scores")
    return Classifier(classify, scores if scores in ("probabilities", "logits") else None)


def load_classifier(artifact: str | Path) -> Classifier:
    """The artifact at `artifact`, ready to classify image files."""
    from exporter.core.saved_model_proto import read_signatures

    path = Path(artifact)
    if path.is_dir() and (path / "model.tflite").is_file():
        path = path / "model.tflite"
    if path.is_file() and path.suffix == ".tflite":
        return _tflite_classifier(path)
    if path.is_dir() and (path / "model.onnx").is_file():
        path = path / "model.onnx"
    if path.is_file() and path.suffix == ".onnx":
        return _onnx_classifier(path)
    if path.is_dir() and (path / "model.xml").is_file() and (path / "model.bin").is_file():
        path = path / "model.xml"
    if path.is_file() and path.suffix == ".xml":
        return _openvino_classifier(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        inputs, _ = read_signatures(path).get("serving_default", ({}, {}))
        if "image_bytes" in inputs:
            return _serving_classifier(path)
    if path.is_dir() and (path / "model.json").is_file():
        return _tfjs_classifier(path)
    if not path.exists():
        raise ExportError(Code.NOT_FOUND, f"artifact {str(artifact)!r} does not exist")
    raise ExportError(
        Code.INVALID_ARGUMENT,
        f"{str(artifact)!r} is not an artifact predict can run: give a .tflite, .onnx or OpenVINO .xml "
        "file, an export folder holding one, a serving SavedModel (tf_saved_model export) or a tf_js "
        "export folder",
    )


def predict(artifact: str | Path, images: list[str | Path], top_k: int = 3) -> list[Prediction]:
    classifier = load_classifier(artifact)
    paths = [Path(image) for image in images]
    for image in paths:
        if not image.is_file():
            raise ExportError(Code.NOT_FOUND, f"image {str(image)!r} does not exist")
    scores, labels = classifier.classify(paths)
    predictions = []
    for image, row in zip(paths, scores, strict=True):
        best = np.argsort(row)[::-1][:top_k]
        predictions.append(Prediction(str(image), [(labels[i], float(row[i])) for i in best], classifier.scores))
    return predictions
