"""TFLite metadata embedded in ``model.tflite``: labels, normalization and tensor descriptions.

Written with the flatbuffers bindings of the TFLite metadata schema that ship in the mediapipe
wheel (its metadata writers fail to import in this stack, and tflite-support needs protobuf < 5).
The metadata goes into a buffer named ``TFLITE_METADATA`` of the model, and the labels file is
appended as a zip member, as tflite-support's MetadataPopulator does, so MediaPipe Tasks finds
``dict.txt`` inside the model with no side files. Reading it back needs no MediaPipe:
``exporter.core.tflite_metadata_reader`` walks the few tables it needs with the flatbuffers runtime.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from exporter.core.labels import LABELS_FILE, labels_text
from exporter.core.tflite_metadata_reader import METADATA_NAME, SCORES_BY_OUTPUT_NAME, read_tflite_metadata

__all__ = ["METADATA_NAME", "SCORES_BY_OUTPUT_NAME", "embed_metadata", "read_metadata"]


def _metadata_bytes(source, description: str, version: str, mean, std, scores_kind: str) -> bytes:
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta

    from converters.output_scores import LOGITS
    from converters.output_scores import describe as describe_scores

    low = min((0 - m) / s for m, s in zip(mean, std, strict=True))
    high = max((255 - m) / s for m, s in zip(mean, std, strict=True))
    image = meta.TensorMetadataT(
        name="image",
        description=f"RGB image, {source.height}x{source.width}, normalized as (pixel - mean) / std",
        content=meta.ContentT(
            contentPropertiesType=meta.ContentProperties.ImageProperties,
            contentProperties=meta.ImagePropertiesT(colorSpace=meta.ColorSpaceType.RGB),
        ),
        processUnits=[
            meta.ProcessUnitT(
                optionsType=meta.ProcessUnitOptions.NormalizationOptions,
                options=meta.NormalizationOptionsT(mean=list(mean), std=list(std)),
            )
        ],
        stats=meta.StatsT(max=[high], min=[low]),
    )
    logits = scores_kind == LOGITS
    scores = meta.TensorMetadataT(
        name="logits" if logits else "probability",
        description=f"{describe_scores(scores_kind, len(source.labels))}, in {LABELS_FILE}'s order",
        content=meta.ContentT(
            contentPropertiesType=meta.ContentProperties.FeatureProperties,
            contentProperties=meta.FeaturePropertiesT(),
        ),
        stats=meta.StatsT() if logits else meta.StatsT(max=[1.0], min=[0.0]),
        associatedFiles=[
            meta.AssociatedFileT(
                name=LABELS_FILE,
                description="Labels for the categories the model can recognize",
                type=meta.AssociatedFileType.TENSOR_AXIS_LABELS,
            )
        ],
    )
    model = meta.ModelMetadataT(
        name=source.display_name,
        description=description,
        version=version,
        author="automl-export-engine",
        subgraphMetadata=[meta.SubGraphMetadataT(inputTensorMetadata=[image], outputTensorMetadata=[scores])],
        minParserVersion="1.0.0",
    )
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"M001")  # the metadata schema's file identifier
    return bytes(builder.Output())


def embed_metadata(
    model_bytes: bytes,
    source,
    description: str,
    version: str,
    *,
    mean=None,
    std=None,
    scores_kind: str = "probabilities",
) -> bytes:
    """`model_bytes` with the metadata buffer added and dict.txt appended as a zip member.

    `mean` and `std` are what a consumer applies to 0..255 pixels (default: the model's own);
    `scores_kind` says whether the output is probabilities or logits.
    """
    import flatbuffers
    from mediapipe.tasks.metadata import schema_py_generated as schema

    mean = source.mean if mean is None else mean
    std = source.std if std is None else std
    metadata = _metadata_bytes(source, description, version, mean, std, scores_kind)
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    model.buffers.append(schema.BufferT(data=np.frombuffer(metadata, np.uint8)))
    entry = schema.MetadataT(name=METADATA_NAME, buffer=len(model.buffers) - 1)
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME] + [entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), b"TFL3")
    packed = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(packed, "a") as archive:
        archive.writestr(LABELS_FILE, labels_text(source.labels))
    return packed.getvalue()


def read_metadata(model_bytes: bytes) -> dict | None:
    """The embedded metadata as a small dict (name, normalization, labels, what the scores are), or None.

    ``scores`` is ``probabilities`` or ``logits`` by the output tensor's name, None for another name.
    Read with the flatbuffers runtime alone (no MediaPipe import): see exporter.core.tflite_metadata_reader."""
    return read_tflite_metadata(model_bytes)
