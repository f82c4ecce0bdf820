"""saved_model.pb is read under bounds: its size before it is read, its parse in protobuf's C
implementation (padding cannot slow it to a crawl), and what its tensors claim beyond the bytes
they carry. The hostile files are made from the canary's real SavedModel."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from exporter.core.errors import Code, ExportError
from exporter.core.graph_constants import DEFAULT_EXPANSION, EXPANSION_SETTING
from exporter.core.model_source import read_model
from exporter.core.saved_model_proto import GRAPH_BYTES_SETTING, _saved_model_class, read_meta_graphs
from exporter.run import export_model


@pytest.fixture
def model(canary_model, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(canary_model, folder)
    return folder


def _pb(folder: Path) -> Path:
    return folder / "saved_model" / "saved_model.pb"


def _config(destination: Path) -> dict:
    return {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(destination)}}


def test_padding_is_skipped_at_protobufs_speed_and_the_model_still_reads(model):
    """20 MiB of unknown fields (three bytes each: the worst case for a reader in Python) after
    the real message: a valid SavedModel still, read in well under the seconds per MiB a Python
    walk over the fields took."""
    pb = _pb(model)
    pb.write_bytes(pb.read_bytes() + bytes([0x98, 0x06, 0x00]) * (20 * (1 << 20) // 3))
    started = time.perf_counter()
    graphs = read_meta_graphs(model / "saved_model")
    seconds = time.perf_counter() - started
    assert graphs and seconds < 5, seconds
    assert read_model(model).labels[0] == "red"


def test_a_pb_over_the_size_limit_is_refused_before_it_is_read(model, monkeypatch):
    """A 3 GiB saved_model.pb (sparse: it costs no disk) is refused from its size at once."""
    pb = _pb(model)
    real = pb.read_bytes()
    with open(pb, "r+b") as handle:
        handle.truncate(3 << 30)
    started = time.perf_counter()
    with pytest.raises(ExportError) as refused:
        export_model(model, _config(model.parent / "exports"))
    assert time.perf_counter() - started < 30
    assert refused.value.code is Code.RESOURCE_EXHAUSTED
    assert "saved_model.pb is 3,221,225,472 bytes" in refused.value.message
    assert GRAPH_BYTES_SETTING in refused.value.message
    assert not (model.parent / "exports").exists()

    pb.write_bytes(real)
    monkeypatch.setenv(GRAPH_BYTES_SETTING, str(len(real) - 1))
    with pytest.raises(ExportError) as limited:
        read_meta_graphs(model / "saved_model")
    assert limited.value.code is Code.RESOURCE_EXHAUSTED
    monkeypatch.setenv(GRAPH_BYTES_SETTING, str(len(real)))
    assert read_meta_graphs(model / "saved_model")


def _with_a_constant_claiming(model: Path, shape: list[int]) -> str:
    """Rewrite one Const of the serving functions into a float32 claiming `shape` from a single
    value; returns its node name (the check reads the graph, nothing runs it)."""
    pb = _pb(model)
    saved_model = _saved_model_class()()
    saved_model.ParseFromString(pb.read_bytes())
    graph = saved_model.meta_graphs[0].graph_def
    for node in [n for f in graph.library.function for n in f.node_def] + list(graph.node):
        if node.op == "Const":
            node.attr["dtype"].type = 1  # DT_FLOAT
            tensor = node.attr["value"].tensor
            tensor.Clear()
            tensor.dtype = 1
            tensor.float_val.append(0.5)
            for size in shape:
                tensor.tensor_shape.dim.add(size=size)
            pb.write_bytes(saved_model.SerializeToString())
            return node.name
    raise AssertionError("the canary's graph has no Const")


def test_a_constant_that_claims_gigabytes_from_a_few_bytes_is_refused_by_name(model):
    node = _with_a_constant_claiming(model, [500_000_000])
    assert _pb(model).stat().st_size < 200_000
    destination = model.parent / "exports"
    with pytest.raises(ExportError) as refused:
        export_model(model, _config(destination))
    error = refused.value
    assert error.code is Code.RESOURCE_EXHAUSTED, error
    assert "bytes more than saved_model.pb carries" in error.message
    assert f"node {node}, float32 [500000000], 2,000,000,000 bytes from 4" in error.message
    assert EXPANSION_SETTING in error.message
    assert not destination.exists()


def test_a_small_repeated_constant_and_a_raised_limit_pass(model, monkeypatch):
    """A constant repeating one value over a small shape is what real graphs hold: allowed; the
    limit is a setting a user can raise for a model that means it."""
    _with_a_constant_claiming(model, [1000, 1000])  # 4 MB from 4 bytes
    read_model(model)
    _with_a_constant_claiming(model, [DEFAULT_EXPANSION // 4 + 1])
    with pytest.raises(ExportError):
        read_model(model)
    monkeypatch.setenv(EXPANSION_SETTING, str(DEFAULT_EXPANSION * 2))
    read_model(model)


def test_a_negative_dimension_is_invalid_argument(model):
    _with_a_constant_claiming(model, [-5, 3])
    with pytest.raises(ExportError) as refused:
        read_model(model)
    assert refused.value.code is Code.INVALID_ARGUMENT and "negative dimension" in refused.value.message
