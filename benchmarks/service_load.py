"""Load benchmark: a fixed request rate against a running server while its workers export.

    .venv/bin/python benchmarks/service_load.py [--rate 50] [--seconds 20] [--clients 20] [--runs 3]

Starts `exporter serve` on loopback (SQLite store), imports the colour-canary sample model, then
sends --rate requests per second for --seconds from --clients concurrent clients: one in ten posts
an export, the rest poll operations. Each run does this twice, on a fresh server each time: with no
workers (the API alone: the exports only queue) and with 2 workers at their CPU niceness
(``--niceness``, EXPORTER_WORKER_NICENESS), which convert all along. Prints and saves, per run and
as the spread over the runs, p50/p99 latency of POST :export and GET operation, the requests lost
(no answer within 10 s) and the 5xx answers, against the goals, and the busy/idle p99 ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from harness import BIN, REPO, save, serve_quietly, timed

CANARY = REPO / ".cache" / "benchmark-models" / "canary"
PARENT = "projects/bench/locations/local"
GOALS = {"post_p99_ms": 50.0, "get_p99_ms": 20.0}
PHASES = (("idle", 0), ("busy", 2))  # workers: none (the API alone), then two converting


def start_server(data: Path, outputs: Path, port: int, workers: int, niceness: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "EXPORTER_DATA_DIR": str(data),
        "EXPORTER_IMPORT_ROOTS": json.dumps([str(CANARY.parent)]),
        "EXPORTER_OUTPUT_ROOTS": json.dumps([str(outputs)]),
        "EXPORTER_WORKERS": str(workers),
        "EXPORTER_WORKER_NICENESS": str(niceness),
        "EXPORTER_MAX_ACTIVE_EXPORTS_PER_PRINCIPAL": "100000",
        "EXPORTER_MAX_QUEUE": "100000",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    process = serve_quietly(port, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["workers"]) == workers:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("benchmark: the server did not start")


async def run_load(base: str, outputs: Path, rate: int, seconds: int, clients: int) -> dict:
    results: dict[str, list[float]] = {"post": [], "get": []}
    lost = {"post": 0, "get": 0}
    server_errors = {"post": 0, "get": 0}
    operations: list[str] = []
    queue: asyncio.Queue = asyncio.Queue()
    body = {"outputConfig": {"gcsDestination": {"outputUriPrefix": str(outputs)}}}

    async def client(http: httpx.AsyncClient) -> None:
        while True:
            kind = await queue.get()
            if kind is None:
                return
            started = time.perf_counter()
            try:
                if kind == "post" or not operations:
                    kind = "post"
                    response = await http.post(f"/v1beta1/{PARENT}/models/canary:export", json=body)
                    if response.status_code == 200:
                        operations.append(response.json()["name"])
                else:
                    response = await http.get(f"/v1beta1/{random.choice(operations)}")
                results[kind].append((time.perf_counter() - started) * 1000)
                if response.status_code >= 500:
                    server_errors[kind] += 1
            except httpx.HTTPError:
                lost[kind] += 1

    async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_connections=clients)) as http:
        tasks = [asyncio.create_task(client(http)) for _ in range(clients)]
        started = time.perf_counter()
        for i in range(rate * seconds):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            queue.put_nowait("post" if i % 10 == 0 else "get")
        for _ in tasks:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started

    def percentile(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else float("nan")

    return {
        "sent": rate * seconds,
        "seconds": elapsed,
        "achieved_rate": rate * seconds / elapsed,
        "post": {
            "count": len(results["post"]),
            "p50_ms": percentile(results["post"], 50),
            "p99_ms": percentile(results["post"], 99),
            "lost": lost["post"],
            "5xx": server_errors["post"],
        },
        "get": {
            "count": len(results["get"]),
            "p50_ms": percentile(results["get"], 50),
            "p99_ms": percentile(results["get"], 99),
            "lost": lost["get"],
            "5xx": server_errors["get"],
        },
        "exports_created": len(operations),
    }


KINDS = (("post", "POST :export", GOALS["post_p99_ms"]), ("get", "GET operation", GOALS["get_p99_ms"]))


def met(row: dict, goal: float) -> bool:
    return row["p99_ms"] < goal and row["lost"] == 0 and row["5xx"] == 0


def markdown(result: dict) -> str:
    lines = [
        f"{result['runs']} runs; in each, {result['rate']} requests/s for {result['seconds_asked']} s from "
        f"{result['clients']} clients, one in ten a POST :export, against a server with no workers (idle) and "
        f"one with 2 workers exporting at niceness {result['niceness']} (busy).",
        "",
        "| run | workers | request | count | p50 ms | p99 ms | lost | 5xx | goal (p99) | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number, run in enumerate(result["by_run"], 1):
        for phase in ("idle", "busy"):
            load = run[phase]
            for kind, label, goal in KINDS:
                row = load[kind]
                lines.append(
                    f"| {number} | {phase} | {label} | {row['count']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                    f"{row['lost']} | {row['5xx']} | < {goal:.0f} ms | {'yes' if met(row, goal) else 'NO'} |"
                )
    lines += ["", "| request | busy p99 ms: min / median / max | busy / idle p99 (median) | goal met in |"]
    lines.append("| --- | --- | --- | --- |")
    for kind, label, goal in KINDS:
        busy = [run["busy"][kind]["p99_ms"] for run in result["by_run"]]
        ratios = [run["busy"][kind]["p99_ms"] / run["idle"][kind]["p99_ms"] for run in result["by_run"]]
        hits = sum(met(run["busy"][kind], goal) for run in result["by_run"])
        lines.append(
            f"| {label} | {min(busy):.1f} / {statistics.median(busy):.1f} / {max(busy):.1f} | "
            f"{statistics.median(ratios):.2f}x | {hits} of {len(busy)} runs |"
        )
    return "\n".join(lines)


def one_phase(work: Path, workers: int, args) -> dict:
    """A fresh server with `workers` workers under the load; what the clients measured."""
    outputs = work / "exports"
    outputs.mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(work / "data", outputs, port, workers, args.niceness)
    base = f"http://127.0.0.1:{port}"
    try:
        imported = httpx.post(
            f"{base}/v1beta1/{PARENT}/models:import", timeout=60, json={"sourceUri": str(CANARY), "modelId": "canary"}
        )
        imported.raise_for_status()
        load = asyncio.run(run_load(base, outputs, args.rate, args.seconds, args.clients))
        done = (
            httpx.get(
                f"{base}/v1beta1/{PARENT}/operations", params={"filter": "done=true", "pageSize": 1000}, timeout=60
            )
            .json()
            .get("operations", [])
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    return {**load, "exports_done": len(done)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="idle and busy phases per run; the spread is over runs")
    parser.add_argument("--niceness", type=int, default=10, help="the workers' CPU niceness (0..19)")
    args = parser.parse_args()
    if not (CANARY / "manifest.json").exists():
        timed([str(BIN / "exporter"), "sample-model", str(CANARY), "--kind", "colour-canary", "--size", "32"])
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    by_run = []
    for number in range(args.runs):
        by_run.append({phase: one_phase(work / f"{number}-{phase}", workers, args) for phase, workers in PHASES})
        print(
            f"run {number + 1}: "
            + json.dumps({p: {k: by_run[-1][p][k]["p99_ms"] for k in ("post", "get")} for p in ("idle", "busy")}),
            flush=True,
        )
    result = {
        "rate": args.rate,
        "seconds_asked": args.seconds,
        "clients": args.clients,
        "runs": args.runs,
        "niceness": args.niceness,
        "by_run": by_run,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    save("service-load", result, markdown(result))


if __name__ == "__main__":
    main()
