"""Tensors written into a graph may claim more than they carry: bounded before anything loads.

A ``TensorProto`` gives a shape and a dtype, and its values either whole (``tensor_content``) or
as a shorter list whose last value TensorFlow repeats to fill the shape. A ``Const`` of shape
[500000000] with one float in it is 12 bytes in ``saved_model.pb`` and 2 GB once loaded. What a
graph carries is bounded by the file's size (``EXPORTER_MAX_GRAPH_BYTES``); what its tensors claim
beyond that, summed over every tensor attribute of every node in the graph and its functions, is
bounded by ``EXPORTER_MAX_CONST_EXPANSION_BYTES``. A real model's constants carry their values, or
repeat one value over a small shape (a zero bias, a scale of ones): far below the limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.core.errors import Code, ExportError
from exporter.core.limit_settings import whole_number_setting

EXPANSION_SETTING = "EXPORTER_MAX_CONST_EXPANSION_BYTES"
DEFAULT_EXPANSION = 256 << 20

# Bytes per element of TensorFlow's fixed-size dtypes (tensorflow/core/framework/types.proto);
# a string element counts as one byte, at least what it costs.
_ITEM_BYTES = {
    "DT_FLOAT": 4,
    "DT_DOUBLE": 8,
    "DT_INT32": 4,
    "DT_UINT8": 1,
    "DT_INT16": 2,
    "DT_INT8": 1,
    "DT_STRING": 1,
    "DT_COMPLEX64": 8,
    "DT_INT64": 8,
    "DT_BOOL": 1,
    "DT_QINT8": 1,
    "DT_QUINT8": 1,
    "DT_QINT32": 4,
    "DT_BFLOAT16": 2,
    "DT_QINT16": 2,
    "DT_QUINT16": 2,
    "DT_UINT16": 2,
    "DT_COMPLEX128": 16,
    "DT_HALF": 2,
    "DT_UINT32": 4,
    "DT_UINT64": 8,
}
# The repeated value fields a TensorProto may carry its values in, and bytes per entry.
_VALUE_FIELDS = {
    "half_val": 2,
    "float_val": 4,
    "double_val": 8,
    "int_val": 4,
    "int64_val": 8,
    "bool_val": 1,
    "scomplex_val": 4,
    "dcomplex_val": 8,
    "uint32_val": 4,
    "uint64_val": 8,
    "float8_val": 1,
}


def max_expansion() -> int:
    return whole_number_setting(EXPANSION_SETTING, DEFAULT_EXPANSION, "bytes", minimum=0)


@dataclass(frozen=True)
class _Claim:
    where: str
    node: str
    shape: list[int]
    dtype: str
    claimed: int
    carried: int


def _carried(tensor) -> int:
    if tensor.tensor_content:
        return len(tensor.tensor_content)
    carried = sum(len(getattr(tensor, name)) * size for name, size in _VALUE_FIELDS.items())
    return carried + sum(len(value) for value in tensor.string_val)


def _claim(tensor, where: str, node: str) -> _Claim:
    from tensorboard.compat.proto import types_pb2

    dims = [d.size for d in tensor.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise ExportError(
            Code.INVALID_ARGUMENT,
            f"the SavedModel's tensor in {where} node {node} has a negative dimension in its shape {dims}",
        )
    dtype = types_pb2.DataType.Name(tensor.dtype) if tensor.dtype in types_pb2.DataType.values() else "DT_INVALID"
    claimed = math.prod(dims) * _ITEM_BYTES.get(dtype, 1)
    name = dtype.removeprefix("DT_").lower()
    name = {"float": "float32", "double": "float64", "half": "float16"}.get(name, name)
    return _Claim(where, node, dims, name, claimed, _carried(tensor))


def _tensors(meta_graph) -> Iterable[_Claim]:
    """Every tensor attribute (a Const's value, and any other op's) in the graph and its functions."""
    places = [("the graph", meta_graph.graph_def.node)]
    places += [(f"function {f.signature.name}", f.node_def) for f in meta_graph.graph_def.library.function]
    for where, nodes in places:
        for node in nodes:
            for value in node.attr.values():
                if value.HasField("tensor"):
                    yield _claim(value.tensor, where, node.name)
                elif value.HasField("list"):
                    for tensor in value.list.tensor:
                        yield _claim(tensor, where, node.name)


def check_constant_sizes(meta_graphs: Iterable) -> None:
    """RESOURCE_EXHAUSTED when the graph's tensors claim more than they carry by more than the
    limit, naming the largest; INVALID_ARGUMENT for a negative dimension."""
    limit = max_expansion()
    total, largest = 0, None
    for meta_graph in meta_graphs:
        for claim in _tensors(meta_graph):
            extra = claim.claimed - claim.carried
            if extra <= 0:
                continue
            total += extra
            if largest is None or extra > largest.claimed - largest.carried:
                largest = claim
    if total > limit and largest is not None:
        raise ExportError(
            Code.RESOURCE_EXHAUSTED,
            f"the SavedModel's constants claim {total:,} bytes more than saved_model.pb carries, over the limit "
            f"of {limit:,} ({EXPANSION_SETTING} raises it); the largest: {largest.where} node {largest.node[:80]}, "
            f"{largest.dtype} {largest.shape}, {largest.claimed:,} bytes from {largest.carried:,}",
        )
