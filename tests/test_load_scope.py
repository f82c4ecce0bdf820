"""One load of the source SavedModel, and one run of it on the held-out images, per export, and
per benchmark matrix: what converters/load_scope.py shares, counted on real exports."""

from pathlib import Path

import pytest

from converters.load_scope import shared_folder, shared_loads
from converters.signature import load_serving_signature
from converters.verification import make_reference
from exporter.core.model_source import read_model
from exporter.run import export_model


@pytest.fixture
def source_loads(monkeypatch, canary_model):
    """How many times TensorFlow loads the canary's SavedModel (tf.saved_model.load, counted): an
    export reads it from a private copy under the same name, so the folder's name is counted."""
    import tensorflow as tf

    load, calls = tf.saved_model.load, []

    def counted(export_dir, *args, **kwargs):
        folder = Path(export_dir).resolve()
        if (folder.parent.name, folder.name) == (canary_model.name, "saved_model"):
            calls.append(export_dir)
        return load(export_dir, *args, **kwargs)

    monkeypatch.setattr(tf.saved_model, "load", counted)
    return calls


def test_a_scope_shares_and_outside_nothing_is_kept(canary_model):
    source = read_model(canary_model)
    assert make_reference(source) is not make_reference(source)
    assert load_serving_signature(source.saved_model_dir) is not load_serving_signature(source.saved_model_dir)
    with shared_loads():
        first = make_reference(source)
        with shared_loads():  # a nested scope joins the outer one
            assert make_reference(source) is first
        assert make_reference(source, limit=8) is not first  # another image set: its own run
        signature = load_serving_signature(source.saved_model_dir)
        assert load_serving_signature(source.saved_model_dir) is signature
    assert make_reference(source) is not first
    with pytest.raises(ValueError):
        first.scores[0, 0] = 1.0  # shared: no user may change it


def test_one_export_loads_its_source_once(canary_model, source_loads, tmp_path):
    config = {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": str(tmp_path)}}
    config["params"] = {"quantization": "uint8"}  # probes the output kind, calibrates and verifies
    export_model(canary_model, config)
    assert len(source_loads) == 1


def test_exports_in_one_scope_load_the_source_once(canary_model, source_loads, tmp_path):
    with shared_loads():
        for model_format in ("tflite", "tf_saved_model", "core_ml"):
            config = {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(tmp_path)}}
            result = export_model(canary_model, config)
            assert result.report["checks"]
    assert len(source_loads) == 1


def test_the_benchmark_matrix_loads_its_source_once(canary_model, source_loads, tmp_path):
    from exporter.benchmark import benchmark_model

    result = benchmark_model(
        canary_model,
        ["tflite", "tf_saved_model"],
        ["litert-cpu-1t", "tf-cpu"],
        output=tmp_path / "bench",
        runs=5,
        min_seconds=0,
        warmup=1,
    )
    assert {row.status for row in result.rows} == {"passed"}, [(r.target, r.reason) for r in result.rows]
    assert len(source_loads) == 1
    assert all(row.p50_ms > 0 for row in result.rows)


def test_a_scratch_folder_is_written_once_per_scope_and_removed_when_it_ends():
    fills = []

    def fill(folder: Path) -> None:
        fills.append(folder)
        (folder / "model").write_text("written once")

    with shared_loads():
        with shared_folder("scratch", fill) as first:
            pass
        with shared_folder("scratch", fill) as second:
            assert (second / "model").read_text() == "written once"
        assert first == second and first.exists() and len(fills) == 1
    assert not first.exists()
    with shared_folder("scratch", fill) as alone:  # outside a scope: for this block only
        assert alone.exists() and len(fills) == 2
    assert not alone.exists()


def test_a_scratch_folder_whose_fill_fails_is_removed_and_not_kept():
    made = []

    def failing(folder: Path) -> None:
        made.append(folder)
        raise RuntimeError("the save failed")

    with shared_loads():
        for _ in range(2):
            with pytest.raises(RuntimeError), shared_folder("scratch", failing):
                pass
        assert len(made) == 2 and not any(folder.exists() for folder in made)


def test_every_tflite_mode_converts_from_one_saved_graph_per_scope(canary_model, tmp_path, monkeypatch):
    """The batch-1 SavedModel the tflite modes convert from is written once for the five modes."""
    import tensorflow as tf

    from conftest import TFLITE_MODES, tflite_config

    save, saves = tf.saved_model.save, []

    def counted(obj, export_dir, *args, **kwargs):
        saves.append(export_dir)
        return save(obj, export_dir, *args, **kwargs)

    monkeypatch.setattr(tf.saved_model, "save", counted)
    with shared_loads():
        for mode in TFLITE_MODES:
            export_model(canary_model, tflite_config(tmp_path / mode, mode))
    # One for the float modes' input, one for the integer modes' (raw pixels, normalization folded in).
    assert len(saves) == 2, saves
    assert not any(Path(folder).exists() for folder in saves)
