"""Read a SavedModel's signatures from ``saved_model.pb`` without importing TensorFlow.

The service checks models it imports without loading TensorFlow in its process; TensorBoard
(a TensorFlow dependency) ships the ``MetaGraphDef`` message classes, and the outer
``SavedModel`` message (field 2: repeated MetaGraphDef) is declared here over them. The file's
size is bounded before it is read.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from exporter.core.errors import Code, ExportError
from exporter.core.limit_settings import whole_number_setting

# TensorInfo: (dtype name, shape or None when the rank is unknown); -1 for an unknown dimension.
TensorInfo = tuple[str, "list[int] | None"]
Signature = tuple[dict[str, TensorInfo], dict[str, TensorInfo]]

GRAPH_BYTES_SETTING = "EXPORTER_MAX_GRAPH_BYTES"
# 512 MiB: a SavedModel keeps its weights in variables/, so saved_model.pb is the graph alone (a few
# MB for the largest keras.applications classifier); a frozen graph with its weights as constants
# fits too. Protocol buffers cannot exceed 2 GiB in any case.
DEFAULT_GRAPH_BYTES = 512 << 20


def max_graph_bytes() -> int:
    return whole_number_setting(GRAPH_BYTES_SETTING, DEFAULT_GRAPH_BYTES, "bytes")


@functools.cache
def _saved_model_class():
    """The outer ``tensorflow.SavedModel`` message (field 1: schema version, field 2: repeated
    MetaGraphDef), declared here over TensorBoard's MetaGraphDef, so that the whole file is parsed
    by protobuf's C implementation (upb): unknown fields and padding are skipped at its speed, not
    walked in Python."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorboard.compat.proto import meta_graph_pb2

    pool = descriptor_pool.Default()
    name = "exporter.saved_model_outer.SavedModel"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    outer = descriptor_pb2.FileDescriptorProto(
        name="exporter/saved_model_outer.proto",
        package="exporter.saved_model_outer",
        dependency=[meta_graph_pb2.DESCRIPTOR.name],
        syntax="proto3",
    )
    message = outer.message_type.add(name="SavedModel")
    field = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="saved_model_schema_version", number=1, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    message.field.add(
        name="meta_graphs",
        number=2,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".tensorboard.MetaGraphDef",
    )
    pool.Add(outer)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def read_meta_graphs(saved_model_dir: str | Path) -> list:
    """The MetaGraphDefs of ``saved_model.pb``, parsed without TensorFlow's runtime, after its size
    is checked against ``EXPORTER_MAX_GRAPH_BYTES`` (on the open file: what is measured is read)."""
    from google.protobuf.message import DecodeError

    path = Path(saved_model_dir) / "saved_model.pb"
    limit = max_graph_bytes()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise ExportError(
                Code.RESOURCE_EXHAUSTED,
                f"{path.name} is {size:,} bytes, over the limit of {limit:,} ({GRAPH_BYTES_SETTING} raises it)",
            )
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew while read
        raise ExportError(
            Code.RESOURCE_EXHAUSTED, f"{path.name} is over the limit of {limit:,} ({GRAPH_BYTES_SETTING})"
        )
    saved_model = _saved_model_class()()
    try:
        saved_model.ParseFromString(data)
    except (DecodeError, RecursionError) as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"{path.name} is not a readable SavedModel ({error})") from None
    graphs = list(saved_model.meta_graphs)
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
