"""Load benchmark: a fixed request rate against a running server while its workers export.

    .venv/bin/python benchmarks/service_load.py [--rate 50] [--seconds 20] [--clients 20]

Starts `exporter serve` on loopback (2 worker processes at lower CPU priority, SQLite store),
imports the colour-canary sample model, then sends --rate requests per second for --seconds from
--clients concurrent clients: one in ten posts an export (so the workers convert all along), the
rest poll operations. Prints and saves p50/p99 latency of POST :export and GET operation, the
requests lost (no answer within 10 s) and the 5xx answers, against the goals.
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
from harness import BIN, REPO, save, timed

CANARY = REPO / ".cache" / "benchmark-models" / "canary"
PARENT = "projects/bench/locations/local"
GOALS = {"post_p99_ms": 50.0, "get_p99_ms": 20.0}


def start_server(data: Path, outputs: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "EXPORTER_DATA_DIR": str(data),
        "EXPORTER_IMPORT_ROOTS": json.dumps([str(CANARY.parent)]),
        "EXPORTER_OUTPUT_ROOTS": json.dumps([str(outputs)]),
        "EXPORTER_WORKERS": "2",
        "EXPORTER_MAX_ACTIVE_EXPORTS_PER_PRINCIPAL": "100000",
        "EXPORTER_MAX_QUEUE": "100000",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    process = subprocess.Popen(
        [str(BIN / "exporter"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["workers"]) == 2:
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


def markdown(result: dict) -> str:
    load = result["load"]
    lines = [
        f"{load['sent']} requests at {result['rate']}/s for {result['seconds_asked']} s from {result['clients']} clients "
        f"(achieved {load['achieved_rate']:.1f}/s), 2 workers exporting at lower CPU priority; "
        f"{load['exports_created']} exports queued, {result['exports_done']} finished during the run.",
        "",
        "| request | count | p50 ms | p99 ms | lost | 5xx | goal (p99) | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, label, goal in (
        ("post", "POST :export", GOALS["post_p99_ms"]),
        ("get", "GET operation", GOALS["get_p99_ms"]),
    ):
        row = load[kind]
        met = row["p99_ms"] < goal and row["lost"] == 0 and row["5xx"] == 0
        lines.append(
            f"| {label} | {row['count']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['lost']} | "
            f"{row['5xx']} | < {goal:.0f} ms, 0 lost, 0 5xx | {'yes' if met else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    if not (CANARY / "manifest.json").exists():
        timed([str(BIN / "exporter"), "sample-model", str(CANARY), "--kind", "colour-canary", "--size", "32"])
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    outputs = work / "exports"
    outputs.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(work / "data", outputs, port)
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
        server.wait(timeout=30)
    result = {
        "rate": args.rate,
        "seconds_asked": args.seconds,
        "clients": args.clients,
        "load": load,
        "exports_done": len(done),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    save("service-load", result, markdown(result))


if __name__ == "__main__":
    main()
