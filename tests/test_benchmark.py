"""``exporter benchmark`` end to end on the colour canary: a small matrix (four formats on four
targets, plus an Edge TPU row that cannot run here), run for real through the command line.

The report's shape is checked (JSON, CSV, Markdown, PNG charts), and its numbers are checked to
come from real runs: positive, ordered latency percentiles from at least the asked count and
duration, agreement and accuracy computed by each runtime, peak memory of the runner itself.
"""

import csv
import json

import pytest

from conftest import run_cli
from exporter.benchmark.rows import EXPORT_FAILED, FIELDS, NOT_RUNNABLE, PASSED

pytestmark = pytest.mark.slow

RUNS, MIN_SECONDS = 30, 0.2
MATRIX = [
    "--formats",
    "tflite:quantization=uint8,tf_js,onnx,openvino",
    "--formats",
    "edgetpu_tflite",
    "--targets",
    "litert-cpu-1t,node-wasm,onnxruntime-cpu-1t,openvino-cpu-1t",
    "--targets",
    "edgetpu",
    "--runs",
    str(RUNS),
    "--min-seconds",
    str(MIN_SECONDS),
    "--warmup",
    "3",
]


@pytest.fixture(scope="module")
def run(canary_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    result = run_cli("benchmark", "--model", str(canary_model), "--output", str(out), *MATRIX, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "benchmark.json").read_text())
    return out, result, report, {row["target"]: row for row in report["rows"]}


def test_report_has_one_row_per_format_and_target_in_every_form(run):
    out, result, report, rows = run
    assert [(r["model_format"], r["params"], r["target"]) for r in report["rows"]] == [
        ("tflite", "quantization=uint8", "litert-cpu-1t"),
        ("tf_js", "", "node-wasm"),
        ("onnx", "", "onnxruntime-cpu-1t"),
        ("openvino", "", "openvino-cpu-1t"),
        ("edgetpu_tflite", "", "edgetpu"),
    ]
    with (out / "benchmark.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == FIELDS and len(table) == 5
    markdown = (out / "benchmark.md").read_text()
    assert "| format | target | status |" in markdown and "litert-cpu-1t" in markdown
    for chart in ("latency_vs_size.png", "export_time.png"):
        data = (out / chart).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert report["machine"]["cpus"] >= 1 and report["model"]["heldoutImages"] == 300
    assert "passed" in result.stdout and str(out / "benchmark.json") in result.stdout


@pytest.mark.parametrize("target", ["litert-cpu-1t", "node-wasm", "onnxruntime-cpu-1t", "openvino-cpu-1t"])
def test_numbers_come_from_a_real_run(run, target):
    row = run[3][target]
    assert row["status"] == PASSED, row["reason"]
    assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["load_init_ms"] > 0 and row["first_inference_ms"] > 0 and row["warmup_ms"] > 0
    assert row["steady_runs"] >= RUNS and row["steady_seconds"] >= MIN_SECONDS
    assert row["images_per_s"] == pytest.approx(row["steady_runs"] / row["steady_seconds"])
    # Computed by the runtime on all 300 held-out images: the canary's exports agree with its source.
    assert row["agreement"] >= 0.97 and abs(row["accuracy"] - row["source_accuracy"]) <= 0.02
    # The runner's own peak (VmHWM), not the exporting parent's gigabyte carried across exec.
    assert 10e6 < row["peak_memory_bytes"] < 700e6
    assert row["size_bytes"] > 0 and row["export_seconds"] > 0 and row["runtime_version"]


def test_a_format_that_cannot_run_here_says_why_and_the_rest_runs(run):
    row = run[3]["edgetpu"]
    assert row["status"] in (EXPORT_FAILED, NOT_RUNNABLE)
    assert "Edge TPU" in row["reason"]
    assert run[3]["litert-cpu-1t"]["status"] == PASSED


def test_baseline_flags_a_regression_beyond_the_margin(run, canary_model, tmp_path):
    out, _, report, _ = run
    for row in report["rows"]:
        if row["target"] == "litert-cpu-1t":  # pretend it used to be ten times faster
            row["p50_ms"] /= 10
            row["p99_ms"] /= 10
            row["images_per_s"] *= 10
        elif row["p50_ms"] is not None:  # and the others ten times slower: no regression there
            row["p50_ms"] *= 10
            row["p99_ms"] *= 10
            row["images_per_s"] /= 10
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(report))
    again = tmp_path / "again"
    result = run_cli(
        "benchmark", "--model", str(canary_model), "--output", str(again), *MATRIX, "--baseline", str(baseline)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("exporter: FAILED_PRECONDITION: 1 rows regressed")
    rows = {row["target"]: row for row in json.loads((again / "benchmark.json").read_text())["rows"]}
    assert "p50" in rows["litert-cpu-1t"]["regression"]
    assert all(rows[target]["regression"] == "" for target in ("node-wasm", "onnxruntime-cpu-1t", "openvino-cpu-1t"))
    assert "regression" in (again / "benchmark.md").read_text()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--targets", "tpu-9000"], "--targets 'tpu-9000': not a target; allowed: tf-cpu,"),
        (["--formats", "caffe"], "--formats 'caffe': 'caffe' is not a format; allowed: source, tflite,"),
        (["--formats", "tflite:quantization=int4"], "--formats 'tflite:quantization=int4': "),
        (["--targets", "ssh"], "--targets 'ssh' names no device: give --inventory FILE"),
        (["--inventory", "no-such-inventory.toml"], "--inventory 'no-such-inventory.toml': No such file"),
        (["--runs", "0"], "--runs must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_before_anything_runs(canary_model, tmp_path, args, says):
    result = run_cli("benchmark", "--model", str(canary_model), "--output", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("exporter: INVALID_ARGUMENT: ") and says in lines[0], lines
    assert not (tmp_path / "out").exists()
