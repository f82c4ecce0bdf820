"""The export cache: a repeat of the same model content, format and params reuses the verified
artifact, publishes its own folder and report, and is bounded and safe between processes."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import traceback
from pathlib import Path

import pytest

from exporter.cache import ENTRY_FILE, ExportCache
from exporter.core.report import REPORT_FILE
from exporter.run import export_model, verify_export


def _config(destination: Path, quantization: str = "uint8") -> dict:
    return {
        "modelFormat": "tflite",
        "gcsDestination": {"outputUriPrefix": str(destination)},
        "params": {"quantization": quantization},
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def first_and_repeat(tmp_path_factory, canary_model):
    folder = tmp_path_factory.mktemp("cache")
    cache = ExportCache(folder / "cache", max_bytes=64 << 20)
    stages: list[tuple[str, str]] = []
    first = export_model(canary_model, _config(folder / "first"), cache=cache)
    repeat = export_model(
        canary_model, _config(folder / "repeat"), cache=cache, progress=lambda s, e: stages.append((s, e))
    )
    return cache, first, repeat, stages


def test_a_repeat_is_served_from_the_cache_with_the_original_verification(first_and_repeat, canary_model):
    cache, first, repeat, stages = first_and_repeat
    assert first.report["cache"]["servedFromCache"] is False
    served = repeat.report["cache"]
    assert served["servedFromCache"] is True and served["key"] == first.report["cache"]["key"]
    assert served["original"]["createTime"] == first.report["createTime"]
    assert repeat.report["checks"] == first.report["checks"]  # the original verification
    assert repeat.output_dir != first.output_dir  # its own folder, with its own report
    written = json.loads((Path(repeat.output_dir) / REPORT_FILE).read_text())
    assert written["cache"]["servedFromCache"] is True and written["createTime"] == repeat.report["createTime"]
    assert _sha(Path(repeat.output_dir) / "model.tflite") == _sha(Path(first.output_dir) / "model.tflite")
    assert [s for s, e in stages if e == "done"] == ["load", "convert", "verify", "publish"]
    # The cached artifact runs: its verification, run again in the TFLite runtime, passes.
    checks = verify_export(repeat.output_dir, canary_model)
    assert checks.keys() == first.report["checks"].keys()


def test_other_params_are_another_entry(first_and_repeat, canary_model, tmp_path):
    cache, first, _, _ = first_and_repeat
    other = export_model(canary_model, _config(tmp_path / "f16", "float16"), cache=cache)
    assert other.report["cache"]["servedFromCache"] is False
    assert other.report["cache"]["key"] != first.report["cache"]["key"]


def test_the_least_recently_used_entries_go_beyond_the_size(tmp_path):
    cache = ExportCache(tmp_path / "cache", max_bytes=2500)
    for name in ("a", "b", "c"):
        staging = tmp_path / f"staging-{name}"
        staging.mkdir()
        (staging / "model.tflite").write_bytes(name.encode() * 1000)
        cache.put(name, staging, {"checks": {}, "createTime": name})
    assert cache.record("a") is None  # evicted: oldest, and three entries do not fit in 2500 bytes
    cache.copy_artifact("b", tmp_path / "used")  # b used now: c is the least recent
    staging = tmp_path / "staging-d"
    staging.mkdir()
    (staging / "model.tflite").write_bytes(b"d" * 1000)
    cache.put("d", staging, {"checks": {}, "createTime": "d"})
    assert [k for k in "abcd" if cache.record(k) is not None] == ["b", "d"]
    assert list((tmp_path / "cache" / "incoming").iterdir()) == []


def _put_in_process(folder: str, staging: str, barrier, results) -> None:
    try:
        cache = ExportCache(folder, max_bytes=1 << 30)
        barrier.wait(timeout=60)
        for _ in range(20):
            cache.put("same", Path(staging), {"checks": {"ok": {"passed": True}}, "createTime": "t"})
            assert cache.record("same")["createTime"] == "t"
        results.put("ok")
    except BaseException:  # noqa: BLE001  (reported to the test, which fails on it)
        results.put(traceback.format_exc())


def test_workers_writing_the_same_entry_at_once_leave_one_whole_entry(tmp_path):
    staging = tmp_path / "staging"
    (staging / "nested").mkdir(parents=True)
    (staging / "model.tflite").write_bytes(b"x" * 100_000)
    (staging / "nested" / "labels.txt").write_text("a\nb\n")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [
        context.Process(target=_put_in_process, args=(str(tmp_path / "cache"), str(staging), barrier, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == ["ok"] * 4, "\n".join(outcomes)
    entry = tmp_path / "cache" / "entries" / "same"
    assert sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*")) == sorted(
        [ENTRY_FILE, "artifact", "artifact/model.tflite", "artifact/nested", "artifact/nested/labels.txt"]
    )
    assert list((tmp_path / "cache" / "incoming").iterdir()) == []
