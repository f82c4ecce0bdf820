"""tf_js exports, verified in Node.js on the wasm backend."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import tfjs_config
from converters.tf_js.node_runtime import tfjs_predict
from exporter.core.errors import Code, ExportError
from exporter.core.images import list_images, load_pixels
from exporter.run import export_model


def test_artifacts_and_node_verification(tfjs_exports):
    for (_name, quantization, contract), (folder, report) in tfjs_exports.items():
        files = sorted(p.name for p in folder.iterdir())
        assert "model.json" in files and "dict.txt" in files and any(f.startswith("group1-shard") for f in files)
        check = report["checks"]["verification"]
        assert check["runtime"] == "node wasm" and check["passed"]
        if quantization == "float32" and contract == "native":
            assert check["agreeing"] == check["decided"] and check["max_abs_diff"] <= 1e-4
        else:
            assert check["decided"] - check["agreeing"] <= 0.05 * check["decided"]


def test_quantization_shrinks_the_weights(tfjs_exports):
    def weight_bytes(key):
        return sum(p.stat().st_size for p in tfjs_exports[key][0].glob("group1-shard*"))

    full = weight_bytes(("canary", "float32", "native"))
    assert weight_bytes(("canary", "float16", "native")) < 0.6 * full
    assert weight_bytes(("canary", "uint8", "native")) < 0.35 * full
    manifest = json.loads((tfjs_exports["canary", "uint8", "native"][0] / "model.json").read_text())
    assert any(w.get("quantization", {}).get("dtype") == "uint8" for w in manifest["weightsManifest"][0]["weights"])


def test_canary_in_node_reads_colours_from_files(tfjs_exports, canary_model):
    folder, _ = tfjs_exports["canary", "float32", "native"]
    files = list_images(canary_model / "images" / "heldout")[::10]
    inputs = np.stack([load_pixels(p, 32, 32) for p in files]).astype(np.float32) / 255.0
    scores, info = tfjs_predict(folder, inputs)
    labels = (folder / "dict.txt").read_text().split()
    assert [labels[i] for i in scores.argmax(1)] == [p.parent.name for p in files]
    swapped, _ = tfjs_predict(folder, inputs[..., ::-1].copy())
    assert (swapped.argmax(1) != scores.argmax(1)).sum() > len(files) / 3


def test_automl_contract_takes_224_images_in_minus_one_to_one(tfjs_exports):
    for key in (("canary", "float32", "automl"), ("digits", "float32", "automl")):
        manifest = json.loads((tfjs_exports[key][0] / "model.json").read_text())
        (spec,) = manifest["signature"]["inputs"].values()
        assert [int(d["size"]) for d in spec["tensorShape"]["dim"]] == [-1, 224, 224, 3]


def test_shard_size_is_honoured(digits_model, tmp_path):
    result = export_model(digits_model, tfjs_config(tmp_path, shard_size_bytes="1048576"))
    shards = sorted(Path(result.output_dir).glob("group1-shard*"))
    assert len(shards) > 5 and all(p.stat().st_size <= 1048576 for p in shards)


def test_missing_node_is_a_clear_error(canary_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, tfjs_config(tmp_path))
    assert raised.value.code is Code.FAILED_PRECONDITION and "Node.js is not on PATH" in raised.value.message
    assert list(tmp_path.iterdir()) == []


def test_missing_js_packages_are_a_clear_error(canary_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTER_NODE_MODULES", str(tmp_path / "no-node-modules"))
    destination = tmp_path / "out"
    with pytest.raises(ExportError) as raised:
        export_model(canary_model, tfjs_config(destination))
    assert raised.value.code is Code.FAILED_PRECONDITION and "npm ci" in raised.value.message
    assert list(destination.iterdir()) == []


def test_the_conversion_process_dies_with_the_process_that_started_it(canary_model, tmp_path):
    """A worker killed mid-export (kill -9) takes its tensorflowjs conversion process with it: left
    running, it would write into a staging folder the operation's next attempt has cleaned."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    starter = (
        "import sys; from pathlib import Path; from converters.tf_js.graph import convert_graph; "
        "convert_graph(Path(sys.argv[1]), Path(sys.argv[2]), 'float32', 4194304)"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    parent = subprocess.Popen(
        [sys.executable, "-c", starter, str(canary_model / "saved_model"), str(tmp_path / "out")], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not (children := psutil.Process(parent.pid).children()):
            assert parent.poll() is None and time.monotonic() < deadline, "no conversion process started"
            time.sleep(0.05)
        (conversion,) = children
        assert "converters.tf_js.graph" in conversion.cmdline()
        time.sleep(1)  # past its start: the parent-death signal is armed first thing
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        # Left alive, it would finish converting (seconds away: it is still starting); killed with
        # its parent, it is gone at once and writes nothing.
        _, alive = psutil.wait_procs([conversion], timeout=5)
        assert alive == [], "the conversion process outlived the process that started it"
        assert not (tmp_path / "out" / "model.json").exists()
    finally:
        if parent.poll() is None:
            parent.kill()
