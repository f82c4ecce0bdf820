"""edgetpu_tflite: full-integer quantization, the compatibility report, and the compiler's
invocation and log parsing against a STAND-IN executable (tests/fixtures/README.md): no real Edge
TPU compile runs in these tests."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo
from containers.edgetpu_compiler import parse_summary
from converters.edgetpu_tflite.compat import compatibility_report, compile_blocker
from converters.tflite.converter import convert_to_tflite
from exporter.core.errors import Code, ExportError
from exporter.core.model_source import read_model
from exporter.run import export_model, model_folder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STANDIN = FIXTURES / "edgetpu_compiler_standin"


def edgetpu_config(destination: Path, **params) -> dict:
    return {"modelFormat": "edgetpu_tflite", "gcsDestination": {"outputUriPrefix": str(destination)}, "params": params}


@pytest.fixture
def standin(monkeypatch, tmp_path):
    record = tmp_path / "standin-call.json"
    monkeypatch.setenv("EXPORTER_EDGETPU_COMPILER", str(STANDIN))
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    return record


def test_sample_model_maps_entirely_with_the_known_op_versions(digits_model):
    report = compatibility_report(convert_to_tflite(read_model(digits_model), "uint8", 20))
    assert report["inputType"] == "UINT8" and compile_blocker(report) is None
    assert report["mappedToEdgeTpu"] == report["operations"] and report["graphSplitsAtOp"] is None
    assert report["opVersions"] == [
        "ADD v2",
        "CONV_2D v3",
        "DEPTHWISE_CONV_2D v3",
        "FULLY_CONNECTED v4",
        "MEAN v2",
        "MUL v2",
        "QUANTIZE v1",
        "SOFTMAX v2",
    ]
    assert report["warnings"] == []


@pytest.fixture(scope="module")
def abs_model(tmp_path_factory, canary_model):
    """A full-integer-convertible classifier with ABS in the middle: TFLite runs it, the TPU does not."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class WithAbs(tf.Module):
        def __init__(self):
            super().__init__()
            self.first = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
            self.second = tf.Variable(rng.normal(0, 0.3, (3, 3, 8, 8)).astype(np.float32))
            self.dense = tf.Variable(rng.normal(0, 0.3, (8, 6)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            x = tf.nn.relu(tf.nn.conv2d(image, self.first, 1, "SAME"))
            x = tf.abs(x - 0.5)
            x = tf.nn.relu(tf.nn.conv2d(x, self.second, 1, "SAME"))
            return {"probabilities": tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]) @ self.dense)}

    root = tmp_path_factory.mktemp("abs-model")
    module = WithAbs()
    tf.saved_model.save(module, str(root / "saved_model"), signatures={"serving_default": module.serve})
    shutil.copy(canary_model / "dict.txt", root / "dict.txt")
    shutil.copytree(canary_model / "images", root / "images")
    (root / "manifest.json").write_text(json.dumps({"display_name": "with_abs", "input": {"range": "0..1"}}))
    return root


def test_an_unsupported_op_splits_the_graph(abs_model):
    report = compatibility_report(convert_to_tflite(read_model(abs_model), "uint8", 20))
    ops = report["ops"]
    (split,) = [o["index"] for o in ops if o["op"] == "ABS"]
    assert report["graphSplitsAtOp"] == split
    assert ops[split]["reason"] == "ABS is not an operation the Edge TPU supports"
    assert ops[split]["source"] == "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
    assert "#compiling" in ops[split + 1]["source"]
    assert report["blockers"] == [
        {"op": "ABS", "count": 1, "firstIndex": split, "reason": ops[split]["reason"], "source": ops[split]["source"]}
    ]
    assert all(o["edgetpu"] for o in ops[:split])
    assert all("after the graph splits at op" in o["reason"] for o in ops[split + 1 :])
    assert report["mappedToEdgeTpu"] == split and report["runOnCpu"] == len(ops) - split
    assert report["warnings"][0].startswith("only ") and "run on the CPU" in report["warnings"][0]
    assert report["warnings"][1] == f"the graph splits at op {split} (ABS): it and every op after it run on the CPU"


def test_a_float_model_cannot_compile(canary_model):
    report = compatibility_report(convert_to_tflite(read_model(canary_model), "float32", 1))
    assert report["mappedToEdgeTpu"] == 0
    assert "FLOAT32" in compile_blocker(report)


def test_export_with_the_standin_compiler(canary_model, tmp_path, standin):
    result = export_model(canary_model, edgetpu_config(tmp_path / "out"))
    folder = Path(result.output_dir)
    assert json.loads(standin.read_text())["argv"] == ["-s", "-o", ".", "-m", "13", "model.tflite"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "dict.txt",
        "edgetpu_compatibility.json",
        "edgetpu_compiler.log",
        "edgetpu_model.tflite",
        "export_report.json",
        "model.tflite",
        "tflite_metadata.json",
    ]
    summary = result.report["checks"]["edgetpu"]["compiler"]
    assert summary["compilerVersion"] == "16.0.384591198" and summary["onChipMemoryUsed"] == "604.50KiB"
    assert summary["offChipMemoryUsed"] == "3.45MiB" and summary["totalOperations"] == 50
    assert "Operation log" in (folder / "edgetpu_compiler.log").read_text()
    assert result.report["checks"]["verification"]["passed"]
    assert result.report["checks"]["edgetpu"]["compiledModelRun"] == "not run: the compiled model needs an Edge TPU"


def test_segments_and_min_runtime_version(canary_model, tmp_path, standin):
    result = export_model(canary_model, edgetpu_config(tmp_path, num_segments="3", min_runtime_version="12"))
    assert json.loads(standin.read_text())["argv"] == ["-s", "-o", ".", "-m", "12", "-n", "3", "model.tflite"]
    names = sorted(p.name for p in Path(result.output_dir).glob("edgetpu_model*"))
    assert names == [f"edgetpu_model_segment_{i}_of_3.tflite" for i in range(3)]


def test_a_failing_compiler_is_a_clear_error(canary_model, tmp_path, standin, monkeypatch):
    monkeypatch.setenv("STANDIN_FAIL", "1")
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, edgetpu_config(tmp_path / "out"))
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert (
        raised.value.message.startswith("edgetpu_compiler failed: ") and "could not be parsed" in raised.value.message
    )
    assert_only_the_failed_report_is_kept(tmp_path / "out", raised.value)


def assert_only_the_failed_report_is_kept(destination: Path, error: ExportError) -> dict:
    """Nothing published; the compatibility report kept beside the failed attempt's report."""
    (kept,) = destination.iterdir()
    assert kept.name.startswith(".model-export-") and kept.name.endswith(".failed")
    assert sorted(p.name for p in kept.iterdir()) == ["edgetpu_compatibility.json", "export_report.json"]
    assert error.report_path == kept / "export_report.json"
    report = json.loads(error.report_path.read_text())
    assert report["state"] == "FAILED" and report["error"]["message"] == error.message
    compatibility = json.loads((kept / "edgetpu_compatibility.json").read_text())
    assert report["convertReports"] == {"edgetpu_compatibility.json": compatibility}
    assert compatibility["mappedToEdgeTpu"] == compatibility["operations"] > 0
    return compatibility


def test_no_compiler_is_failed_precondition_with_how_to_install(canary_model, tmp_path, monkeypatch):
    monkeypatch.delenv("EXPORTER_EDGETPU_COMPILER", raising=False)
    monkeypatch.setenv("EXPORTER_EDGETPU_IMAGE", "automl-export-engine/no-such-image:0")
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, edgetpu_config(tmp_path))
    assert raised.value.code is Code.FAILED_PRECONDITION
    assert "no Edge TPU compiler" in raised.value.message and "apt-get install edgetpu-compiler" in raised.value.message
    assert_only_the_failed_report_is_kept(tmp_path, raised.value)


def test_log_parsing_with_an_operator_table():
    summary = parse_summary((FIXTURES / "edgetpu_compiler_427.txt").read_text())
    assert summary["operationsOnEdgeTpu"] == 135 and summary["operationsOnCpu"] == 1
    assert summary["operators"][0] == {"operator": "RESHAPE", "count": 15, "status": "Mapped to Edge TPU"}
    assert len(summary["operators"]) == 4 and summary["onChipMemoryRemaining"] == "1.75KiB"


def last_zoo_run_mapping(model: str) -> dict | None:
    """The Edge TPU mapping the last zoo matrix run recorded for `model` (benchmarks/zoo_matrix.json),
    or None where that run did not reach the cell (the JSON lists it under notRun)."""
    run = json.loads((FIXTURES.parent.parent / "benchmarks" / "zoo_matrix.json").read_text())
    cells = [r for r in run["results"] if (r["model"], r["cell"]) == (model, "edgetpu_tflite")]
    if not cells:
        assert [model, "edgetpu_tflite"] in run["notRun"]["cells"]
        return None
    return cells[0]["edgetpu"]


@pytest.mark.slow
# The forms made from another entry's network (tutorial_keras_file, ...) are walked by the zoo
# matrix's edgetpu_tflite cells; here the networks themselves.
@pytest.mark.parametrize("model", [name for name, entry in zoo.ZOO.items() if not entry.made_from])
def test_zoo_uint8_models_map_as_coral_documents(model):
    """Each zoo model's full-integer model, walked op by op: every op of the convolutional families
    maps but MobileNetV3's HARD_SWISH, which public compiler reports show refused, with the published
    remedy; the models whose last full run recorded blockers (attention's BATCH_MATMUL and GELU,
    ConvNeXt's CONV_2D and GELU) stop where it did."""
    held_as, options = zoo.export_arguments(zoo.zoo_model(model))
    with model_folder(held_as) as folder:
        source = read_model(folder, labels=options.get("labels"), images=options.get("images"))
        report = compatibility_report(convert_to_tflite(source, "uint8", 4))
    blockers = [b["op"] for b in report["blockers"]]
    recorded = last_zoo_run_mapping(model)
    if recorded and recorded["blockers"] and not model.startswith("mobilenet_v3"):
        assert blockers == recorded["blockers"] and report["graphSplitsAtOp"] is not None
    elif model.startswith("mobilenet_v3"):
        assert blockers == ["HARD_SWISH"]
        (hard_swish,) = report["blockers"]
        assert "minimalistic=True" in hard_swish["remedy"]
        assert "issues/272" in hard_swish["source"] and "issues/353" in hard_swish["source"]
        assert report["mappedToEdgeTpu"] == report["graphSplitsAtOp"] == hard_swish["firstIndex"]
        assert "minimalistic=True" in report["warnings"][-1]
    else:
        assert blockers == [] and report["mappedToEdgeTpu"] == report["operations"]
        assert report["graphSplitsAtOp"] is None
    # The export of a logits model adds a SOFTMAX (output_scores=probabilities); this walk does not.
    added = 1 if zoo.ZOO[model].logits else 0
    mapping = {
        "mapped": report["mappedToEdgeTpu"] + (0 if blockers else added),  # past a blocker nothing maps
        "operations": report["operations"] + added,
        "blockers": blockers,
    }
    assert last_zoo_run_mapping(model) in (mapping, None)  # the same ops as the matrix's export mapped
