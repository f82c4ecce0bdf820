"""Read a SavedModel's signatures from ``saved_model.pb`` without importing TensorFlow.

The service checks models it imports without loading TensorFlow in its process; TensorBoard
(a TensorFlow dependency) ships the ``MetaGraphDef`` message classes, and the outer
``SavedModel`` message (field 2: repeated MetaGraphDef) is read here from the wire format.
"""

from __future__ import annotations

from pathlib import Path

from exporter.core.errors import Code, ExportError

# TensorInfo: (dtype name, shape or None when the rank is unknown); -1 for an unknown dimension.
TensorInfo = tuple[str, "list[int] | None"]
Signature = tuple[dict[str, TensorInfo], dict[str, TensorInfo]]

_META_GRAPHS_FIELD = 2
_LENGTH_DELIMITED = 2


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _meta_graph_bytes(data: bytes) -> list[bytes]:
    """The serialized MetaGraphDefs in a SavedModel message."""
    found, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            if number == _META_GRAPHS_FIELD:
                found.append(data[pos : pos + length])
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated message")
    return found


def read_meta_graphs(saved_model_dir: str | Path) -> list:
    """The MetaGraphDefs of ``saved_model.pb``, parsed without TensorFlow's runtime."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import meta_graph_pb2

    path = Path(saved_model_dir) / "saved_model.pb"
    try:
        graphs = []
        for raw in _meta_graph_bytes(path.read_bytes()):
            graph = meta_graph_pb2.MetaGraphDef()
            graph.ParseFromString(raw)
            graphs.append(graph)
    except (ValueError, DecodeError) as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"{path.name} is not a readable SavedModel ({error})") from None
    if not graphs:
        raise ExportError(Code.INVALID_ARGUMENT, f"{path.name} holds no MetaGraph")
    return graphs


def read_signatures(saved_model_dir: Path) -> dict[str, Signature]:
    """Signature key -> (inputs, outputs) of the SavedModel's serving MetaGraph."""
    from tensorboard.compat.proto import types_pb2

    path = Path(saved_model_dir) / "saved_model.pb"
    graphs = read_meta_graphs(saved_model_dir)
    serving = [g for g in graphs if "serve" in g.meta_info_def.tags] or graphs
    if not serving:
        raise ExportError(Code.INVALID_ARGUMENT, f"{path.name} holds no MetaGraph")

    def info(tensor) -> TensorInfo:
        dtype = types_pb2.DataType.Name(tensor.dtype).removeprefix("DT_").lower()
        if dtype == "float":
            dtype = "float32"
        shape = None if tensor.tensor_shape.unknown_rank else [d.size for d in tensor.tensor_shape.dim]
        return dtype, shape

    return {
        key: ({k: info(v) for k, v in sig.inputs.items()}, {k: info(v) for k, v in sig.outputs.items()})
        for key, sig in serving[0].signature_def.items()
    }
