"""The zoo matrix (benchmarks/zoo_matrix.py): a subset of its cells that covers every zoo family and
every format, each run for real and held to the last full run's outcome; and the table in
docs/zoo.md, which must be the one that run's raw results (benchmarks/zoo_matrix.json) render."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("zoo_matrix", REPO / "benchmarks" / "zoo_matrix.py")
matrix = importlib.util.module_from_spec(_spec)
sys.modules["zoo_matrix"] = matrix
_spec.loader.exec_module(matrix)

import zoo  # noqa: E402  (tests/zoo.py, beside this file)

# One cell per zoo model, every format at least once, the cheaper cells of each model (about 374 s
# of exports as the full run measured them, on two shared cores). EfficientNetB0's uint8 cell, which
# needs its remedies (about a minute), is held to its budget by test_quantization_budget.py (--zoo).
CI_SUBSET = (
    ("mobilenet_v2", "tflite float16"),
    ("mobilenet_v3_small", "tf_js"),
    ("mobilenet_v3_large", "edgetpu_tflite"),
    ("efficientnet_b0", "tf_saved_model"),
    ("efficientnet_v2_b0", "core_ml"),
    ("nasnet_mobile", "tflite float32"),
    ("resnet50", "tflite float16"),
    ("tf_module", "tflite uint8"),
    ("logits", "tflite float16"),
    ("tf_module_logits", "tflite float16"),
    ("convnext_tiny", "tflite float16"),
    ("attention", "tflite float32"),
    ("tutorial", "tflite uint8"),
    ("tutorial_keras_file", "core_ml"),
    ("tutorial_uint8", "tflite uint8"),
    ("tutorial_image_bytes", "tflite float32"),
)
# The tf.Modules train in half a minute and export in seconds: they take every format, so the suite
# checks every format on a zoo model, probabilities and logits, without --zoo; mobilenet_v3_small
# adds its Edge TPU cell with --zoo. The cells above on the models conftest.QUICK_ZOO_MODELS leaves
# out run with --zoo.
QUICK_CELLS = tuple(
    (model, cell.name)
    for model in ("tf_module", "tf_module_logits")
    for cell in matrix.CELLS
    if (model, cell.name) not in CI_SUBSET
) + (("mobilenet_v3_small", "edgetpu_tflite"),)


def last_run() -> dict:
    return json.loads(matrix.RESULTS_FILE.read_text())


def test_the_docs_table_is_the_last_full_run():
    run = last_run()
    assert run["models"] == list(zoo.ZOO) and run["cells"] == [cell.name for cell in matrix.CELLS]
    recorded = {(r["model"], r["cell"]) for r in run["results"]}
    not_run = {tuple(cell) for cell in run.get("notRun", {}).get("cells", [])}
    assert not recorded & not_run and run.get("notRun", {}).get("reason", "stated") != ""
    assert recorded | not_run == {(m, c) for m in run["models"] for c in run["cells"]}, "every cell shown"
    assert matrix.page_table(matrix.TABLE_PAGE.read_text()) == matrix.render_table(run), (
        "docs/zoo.md's table is stale: run `.venv/bin/python benchmarks/zoo_matrix.py --table`"
    )


def test_the_subset_covers_every_family_and_every_format():
    assert sorted({model for model, _ in CI_SUBSET}) == sorted(zoo.ZOO)
    assert sorted({cell for _, cell in CI_SUBSET}) == sorted(matrix.CELL_BY_NAME)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,cell", CI_SUBSET + QUICK_CELLS, ids=[f"{m}-{c.replace(' ', '_')}" for m, c in CI_SUBSET + QUICK_CELLS]
)
def test_a_cell_does_what_the_full_run_recorded(model, cell, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTER_EDGETPU_COMPILER", str(matrix.STANDIN))
    monkeypatch.setenv("STANDIN_RECORD", str(tmp_path / "standin-call.json"))
    record = matrix.run_cell(zoo.zoo_model(model), matrix.CELL_BY_NAME[cell], tmp_path / "out")
    (recorded,) = [r for r in last_run()["results"] if (r["model"], r["cell"]) == (model, cell)]
    assert record["result"] == recorded["result"], record
    if record["result"] == "fail":
        assert record["code"] == recorded["code"], record
    else:
        assert record["bytes"] > 0 and record.get("note") == recorded.get("note")
        assert ("decided" in record) == ("decided" in recorded)  # Core ML on Linux compares no scores
    if "edgetpu" in recorded:  # the op graph is deterministic: the same ops map
        assert record["edgetpu"] == recorded["edgetpu"]
