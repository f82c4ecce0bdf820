"""Read a ``.tflite`` model's embedded metadata with the flatbuffers runtime alone, no MediaPipe.

``exporter predict`` on a ``.tflite`` needs four facts of its metadata: the model's name, the input
normalization, the labels and what the scores are. Importing MediaPipe's generated schema classes
for them costs seconds and hundreds of MB, so the few tables are walked here with
``flatbuffers.table.Table``. A table's field ``id`` (its order in the ``.fbs`` file, deprecated
fields included) sits at vtable slot ``4 + 2 * id``; the ids below are from TensorFlow's
``tensorflow/compiler/mlir/lite/schema/schema.fbs`` (the model) and tflite-support's
``metadata_schema.fbs`` (the metadata), and agree with the generated ``schema_py_generated.py`` and
``metadata_schema_py_generated.py`` that ship in the mediapipe wheel. The labels are the
``dict.txt`` member of the zip archive appended to the model, as tflite-support's
MetadataPopulator writes it.
"""

from __future__ import annotations

import io
import struct
import zipfile

from flatbuffers import encode
from flatbuffers import number_types as N
from flatbuffers.table import Table

from exporter.core.labels import LABELS_FILE, parse_labels

METADATA_NAME = "TFLITE_METADATA"  # the Model.metadata entry naming the metadata's buffer

# schema.fbs, table Model
MODEL_BUFFERS = 4  # buffers: [Buffer]  (0 version, 1 operator_codes, 2 subgraphs, 3 description)
MODEL_METADATA = 6  # metadata: [Metadata]  (5 metadata_buffer, 7 signature_defs)
# schema.fbs, table Buffer
BUFFER_DATA = 0  # data: [ubyte]
BUFFER_OFFSET = 1  # offset: ulong, from the file's start, for data outside the flatbuffer (> 2 GB models); valid if > 1
BUFFER_SIZE = 2  # size: ulong
# schema.fbs, table Metadata
METADATA_ENTRY_NAME = 0  # name: string
METADATA_ENTRY_BUFFER = 1  # buffer: uint, an index into Model.buffers

# metadata_schema.fbs, table ModelMetadata
MODEL_METADATA_NAME = 0  # name: string  (1 description, 2 version)
MODEL_METADATA_SUBGRAPHS = 3  # subgraph_metadata: [SubGraphMetadata]
# metadata_schema.fbs, table SubGraphMetadata
SUBGRAPH_INPUTS = 2  # input_tensor_metadata: [TensorMetadata]  (0 name, 1 description)
SUBGRAPH_OUTPUTS = 3  # output_tensor_metadata: [TensorMetadata]
# metadata_schema.fbs, table TensorMetadata
TENSOR_NAME = 0  # name: string
TENSOR_PROCESS_UNITS = 4  # process_units: [ProcessUnit]  (1 description, 2 dimension_names, 3 content)
# metadata_schema.fbs, table ProcessUnit: options: ProcessUnitOptions, a union, takes two ids
PROCESS_UNIT_OPTIONS_TYPE = 0  # options_type: ubyte (the union's hidden type field)
PROCESS_UNIT_OPTIONS = 1  # options: the union's table
NORMALIZATION_OPTIONS = 1  # union ProcessUnitOptions: NONE = 0, NormalizationOptions = 1, ...
# metadata_schema.fbs, table NormalizationOptions
NORMALIZATION_MEAN = 0  # mean: [float]
NORMALIZATION_STD = 1  # std: [float]


def _root(data: bytes, start: int = 0) -> Table:
    """The root table of the flatbuffer that begins at `start` (its first uoffset points at it)."""
    return Table(data, start + encode.Get(N.UOffsetTFlags.packer_type, data, start))


def _slot(table: Table, field_id: int) -> int:
    """Where field `field_id` sits, relative to the table; 0 where the field is absent."""
    return table.Offset(4 + 2 * field_id)


def _scalar(table: Table, field_id: int, flags, default: int = 0) -> int:
    slot = _slot(table, field_id)
    return table.Get(flags, table.Pos + slot) if slot else default


def _string(table: Table, field_id: int) -> str | None:
    slot = _slot(table, field_id)
    return table.String(table.Pos + slot).decode("utf-8") if slot else None


def _table(table: Table, field_id: int) -> Table | None:
    slot = _slot(table, field_id)
    return Table(table.Bytes, table.Indirect(table.Pos + slot)) if slot else None


def _tables(table: Table, field_id: int) -> list[Table]:
    slot = _slot(table, field_id)
    if not slot:
        return []
    start = table.Vector(slot)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(slot))]


def _vector_bytes(table: Table, field_id: int, item_size: int = 1) -> bytes | None:
    slot = _slot(table, field_id)
    if not slot:
        return None
    start = table.Vector(slot)
    return bytes(table.Bytes[start : start + item_size * table.VectorLen(slot)])


def _floats(table: Table | None, field_id: int) -> list[float] | None:
    raw = None if table is None else _vector_bytes(table, field_id, 4)
    return None if raw is None else list(struct.unpack(f"<{len(raw) // 4}f", raw))


def metadata_buffer(model_bytes: bytes) -> bytes | None:
    """The bytes of the model's ``TFLITE_METADATA`` buffer (a ModelMetadata flatbuffer), or None."""
    model = _root(model_bytes)
    for entry in _tables(model, MODEL_METADATA):
        if _string(entry, METADATA_ENTRY_NAME) != METADATA_NAME:
            continue
        buffers = _tables(model, MODEL_BUFFERS)
        index = _scalar(entry, METADATA_ENTRY_BUFFER, N.Uint32Flags)
        if index >= len(buffers):
            return None
        buffer = buffers[index]
        data = _vector_bytes(buffer, BUFFER_DATA)
        if data:
            return data
        offset = _scalar(buffer, BUFFER_OFFSET, N.Uint64Flags)
        size = _scalar(buffer, BUFFER_SIZE, N.Uint64Flags)
        return bytes(model_bytes[offset : offset + size]) if offset > 1 else None
    return None


# What the output tensor's metadata is named, by what its scores are (tflite-support's classifier
# names it "probability").
SCORES_BY_OUTPUT_NAME = {"probability": "probabilities", "logits": "logits"}


def read_tflite_metadata(model_bytes: bytes) -> dict | None:
    """name, mean, std, labels and scores (``probabilities``, ``logits`` or None, by the output
    tensor's name) of the model's embedded metadata; None where the model embeds none.
    mean and std are None where the input tensor states no NormalizationOptions."""
    raw = metadata_buffer(model_bytes)
    if raw is None:
        return None
    found = _root(raw)
    subgraph = _tables(found, MODEL_METADATA_SUBGRAPHS)[0]
    image = _tables(subgraph, SUBGRAPH_INPUTS)[0]
    normalization = None
    for unit in _tables(image, TENSOR_PROCESS_UNITS)[:1]:  # as the engine writes it: the first unit
        if _scalar(unit, PROCESS_UNIT_OPTIONS_TYPE, N.Uint8Flags) == NORMALIZATION_OPTIONS:
            normalization = _table(unit, PROCESS_UNIT_OPTIONS)
    output_name = _string(_tables(subgraph, SUBGRAPH_OUTPUTS)[0], TENSOR_NAME)
    with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
        labels = parse_labels(archive.read(LABELS_FILE).decode("utf-8"))
    return {
        "name": _string(found, MODEL_METADATA_NAME),
        "mean": _floats(normalization, NORMALIZATION_MEAN),
        "std": _floats(normalization, NORMALIZATION_STD),
        "labels": labels,
        "scores": SCORES_BY_OUTPUT_NAME.get(output_name),
    }
