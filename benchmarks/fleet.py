"""Fleet benchmark: the export cache's repeat against a fresh export, and exports per hour with one
and with two embedded workers, as ratios measured in one run.

    .venv/bin/python benchmarks/fleet.py [--repeats 3] [--jobs 6] [--skip-cache] [--skip-throughput] [--burst 100]

Cache: the colour-canary sample model exported to tflite (uint8) --repeats times fresh (no cache,
in this process, TensorFlow loaded once before) and --repeats times as a cached repeat of the same
request; prints the medians and their ratio (goal: under 0.05x). Throughput: `exporter serve` with
1, then 2, embedded workers (sandbox off, SQLite store), --jobs exports of mixed formats (tflite,
tf_saved_model, tf_js in turn) queued at once; prints exports per hour and the 2-to-1 ratio.
Burst: --burst tflite exports posted by 20 clients at once into one folder (2 embedded workers);
fails unless every one ends succeeded with a folder of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
from harness import BIN, REPO, save, timed

CANARY = REPO / ".cache" / "benchmark-models" / "canary"
PARENT = "projects/bench/locations/local"
CACHE_GOAL = 0.05
MIXED = ("tflite", "tf_saved_model", "tf_js")


def canary() -> Path:
    if not (CANARY / "manifest.json").exists():
        timed([str(BIN / "exporter"), "sample-model", str(CANARY), "--kind", "colour-canary", "--size", "32"])
    return CANARY


def cache_ratio(model: Path, repeats: int, work: Path) -> dict:
    import tensorflow  # noqa: F401  (loaded before timing: a worker has it loaded too)

    from exporter.cache import ExportCache
    from exporter.run import export_model

    def config(folder: str) -> dict:
        return {
            "modelFormat": "tflite",
            "gcsDestination": {"outputUriPrefix": str(work / folder)},
            "params": {"quantization": "uint8"},
        }

    export_model(model, config("warm-up"))  # first-use costs (imports, graph tracing) out of the timing
    fresh = []
    for i in range(repeats):
        started = time.perf_counter()
        export_model(model, config(f"fresh-{i}"))
        fresh.append(time.perf_counter() - started)
    cache = ExportCache(work / "cache", max_bytes=1 << 30)
    export_model(model, config("fill"), cache=cache)  # the first export of the request fills the cache
    cached = []
    for i in range(repeats):
        started = time.perf_counter()
        result = export_model(model, config(f"cached-{i}"), cache=cache)
        cached.append(time.perf_counter() - started)
        assert result.report["cache"]["servedFromCache"] is True
    ratio = statistics.median(cached) / statistics.median(fresh)
    return {
        "fresh_s": [round(s, 3) for s in fresh],
        "cached_s": [round(s, 3) for s in cached],
        "ratio": round(ratio, 4),
        "goal": CACHE_GOAL,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throughput(model: Path, workers: int, jobs: int, work: Path, clients: int = 1, formats=MIXED) -> dict:
    data, outputs, port = work / f"data-{workers}", work / f"out-{workers}", free_port()
    outputs.mkdir(parents=True)
    env = {
        **os.environ,
        "EXPORTER_DATA_DIR": str(data),
        "EXPORTER_IMPORT_ROOTS": json.dumps([str(model.parent)]),
        "EXPORTER_OUTPUT_ROOTS": json.dumps([str(outputs)]),
        "EXPORTER_WORKERS": str(workers),
        "EXPORTER_SANDBOX": "off",
        "EXPORTER_MAX_ACTIVE_EXPORTS_PER_PRINCIPAL": "1000",
        "EXPORTER_MAX_QUEUE": "1000",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    server = subprocess.Popen(
        [str(BIN / "exporter"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/v1beta1/{PARENT}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if len(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["workers"]) == workers:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("benchmark: the server did not start")
            time.sleep(0.2)
        httpx.post(f"{base}/models:import", json={"sourceUri": str(model), "modelId": "canary"}, timeout=60)
        time.sleep(20)  # the workers load TensorFlow before their first job
        started = time.perf_counter()

        def post(i: int) -> str:
            body = {
                "outputConfig": {
                    "modelFormat": formats[i % len(formats)],
                    # Every export into one folder: their names must all differ.
                    "gcsDestination": {"outputUriPrefix": str(outputs / "all")},
                }
            }
            answer = httpx.post(f"{base}/models/canary:export", json=body, timeout=60)
            if answer.status_code != 200:
                raise SystemExit(f"benchmark: export {i} refused: {answer.text}")
            return answer.json()["name"]

        with ThreadPoolExecutor(clients) as pool:
            names = list(pool.map(post, range(jobs)))
        for name in names:
            while True:
                operation = httpx.post(
                    f"http://127.0.0.1:{port}/v1beta1/{name}:wait", json={"timeout": "30s"}, timeout=60
                ).json()
                if operation["done"]:
                    if "error" in operation:
                        raise SystemExit(f"benchmark: {name} failed: {operation['error']}")
                    break
        seconds = time.perf_counter() - started
        folders = [p for p in (outputs / "all").iterdir() if not p.name.startswith(".")]
        if len(folders) != jobs or len(set(names)) != jobs:
            raise SystemExit(f"benchmark: {jobs} exports made {len(folders)} folders ({len(set(names))} operations)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    return {
        "workers": workers,
        "jobs": jobs,
        "clients": clients,
        "formats": list(formats),
        "seconds": round(seconds, 2),
        "per_hour": round(jobs * 3600 / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--burst", type=int, default=0, help="also: this many tflite exports from 20 clients at once")
    parser.add_argument("--skip-cache", action="store_true")
    args = parser.parse_args()
    model = canary()
    result: dict = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_cache:
            result["cache"] = cache_ratio(model, args.repeats, Path(work))
        if not args.skip_throughput:
            result["throughput"] = [throughput(model, n, args.jobs, Path(work)) for n in (1, 2)]
        if args.burst:
            result["burst"] = throughput(model, 2, args.burst, Path(work) / "burst", clients=20, formats=("tflite",))
    lines = [
        f"# Fleet benchmark, {result['time']} ({result['cores']} cores)",
        "",
        "| measure | value |",
        "| --- | --- |",
    ]
    if cache := result.get("cache"):
        lines += [
            f"| fresh tflite export of the canary, median of {args.repeats} | {statistics.median(cache['fresh_s']):.3f} s |",
            f"| cached repeat, median of {args.repeats} | {statistics.median(cache['cached_s']):.3f} s |",
            f"| cached / fresh | {cache['ratio']:.4f}x (goal < {CACHE_GOAL}x) |",
        ]
    for row in result.get("throughput", []):
        lines.append(
            f"| {row['jobs']} mixed exports, {row['workers']} embedded worker(s) | {row['per_hour']} per hour |"
        )
    if len(result.get("throughput", [])) == 2:
        one, two = result["throughput"]
        lines.append(f"| 2 workers / 1 worker | {two['per_hour'] / one['per_hour']:.2f}x |")
    if burst := result.get("burst"):
        lines.append(
            f"| {burst['jobs']} tflite exports from 20 clients at once, 2 embedded workers | all ended, "
            f"{burst['jobs']} distinct folders, {burst['seconds']:.0f} s, {burst['per_hour']} per hour |"
        )
    save("fleet", result, "\n".join(lines))


if __name__ == "__main__":
    main()
