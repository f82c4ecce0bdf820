"""Fleet benchmark: the export cache's repeat against a fresh export, exports per hour with one
and with two workers, and a burst of exports from many clients at once, measured in one run.

    .venv/bin/python benchmarks/fleet.py [--repeats 3] [--jobs 6] [--skip-cache] [--skip-throughput]
        [--burst 100 [--clients 20] [--limit 2]] [--runner embedded|celery [--broker-url URL] [--pg-admin URL]]

Cache: the colour-canary sample model exported to tflite (uint8) --repeats times fresh (no cache,
in this process, TensorFlow loaded once before) and --repeats times as a cached repeat of the same
request; prints the medians and their ratio (goal: under 0.05x). Throughput: `exporter serve` with
1, then 2, workers (sandbox off), --jobs exports of mixed formats (tflite, tf_saved_model, tf_js in
turn) queued at once; prints exports per hour and the 2-to-1 ratio. Burst: --burst tflite exports
into one folder, posted at the same moment by --clients clients, each a principal of its own with a
limit of --limit active exports (2 workers); a refused post is posted again a second later. Fails
unless every export ends succeeded with a folder of its own, no staging folder is left, and the
store's create and end times show no client above its limit at any moment.

--runner embedded (default): the server's own worker processes, SQLite store. --runner celery:
`exporter serve` with EXPORTER_RUNNER=celery and that many `exporter worker` processes, on a
redis-server of the benchmark's own (or --broker-url, amqp:// for RabbitMQ), with a PostgreSQL
database that the benchmark makes at --pg-admin and drops after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import redis
from harness import BIN, REPO, save, serve_quietly, timed
from sqlalchemy.engine import make_url

from exporter.service.store import Store

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


def wait_until(ready, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: {what} not ready in {timeout:g} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL after a minute."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextmanager
def redis_broker(work: Path) -> Iterator[str]:
    """A redis-server of the benchmark's own on a free loopback port (no persistence)."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def answers() -> bool:
        try:
            return redis.Redis(port=port).ping()
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, "redis-server", 20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of the benchmark's own (a fleet's shared store), dropped after."""
    name = f"exporter_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield str(make_url(admin_url).set(drivername="postgresql+psycopg", database=name).render_as_string(False))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Fleet:
    """Options for the service under measure: the embedded pool, or Celery workers on a broker
    (one of the benchmark's own unless given) with PostgreSQL as the shared store."""

    runner: str = "embedded"
    broker_url: str | None = None
    pg_admin: str = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Service:
    base: str  # .../v1beta1/<parent>
    root: str  # http://127.0.0.1:<port>
    store_url: str


@contextmanager
def running_service(
    model: Path,
    workers: int,
    work: Path,
    fleet: Fleet,
    extra_env: dict[str, str] | None = None,
    import_headers: dict[str, str] | None = None,
) -> Iterator[Service]:
    """`exporter serve` with `workers` embedded workers, or with EXPORTER_RUNNER=celery and
    `workers` `exporter worker` processes; the model imported as "canary"."""
    data, outputs, port = work / f"data-{workers}", work / f"out-{workers}", free_port()
    outputs.mkdir(parents=True)
    with ExitStack() as stack:
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
        store_url = f"sqlite:///{(data / 'exporter.db').resolve()}"
        if fleet.runner == "celery":
            broker = fleet.broker_url or stack.enter_context(redis_broker(work))
            store_url = stack.enter_context(throwaway_database(fleet.pg_admin))
            env |= {
                "EXPORTER_RUNNER": "celery",
                "EXPORTER_BROKER_URL": broker,
                "EXPORTER_DATABASE_URL": store_url,
                "EXPORTER_WORKERS": "0",
            }
        env |= extra_env or {}
        server = serve_quietly(port, env)
        stack.callback(stop, server)
        root = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return len(httpx.get(f"{root}/healthz", timeout=1).json()["workers"]) == int(env["EXPORTER_WORKERS"])
            except httpx.HTTPError:
                return False

        wait_until(healthy, "the server")
        if fleet.runner == "celery":
            logs = []
            for i in range(workers):
                log = work / f"worker-{workers}-{i}.log"
                out = stack.enter_context(open(log, "wb"))
                process = subprocess.Popen(
                    [str(BIN / "exporter"), "worker", "--queues", "exports", "--name", f"bench-{i}"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                stack.callback(stop, process)
                logs.append(log)
            for log in logs:  # each has loaded TensorFlow and is listening
                wait_until(lambda log=log: b" ready." in log.read_bytes(), f"the Celery worker of {log.name}")
        base = f"{root}/v1beta1/{PARENT}"
        imported = httpx.post(
            f"{base}/models:import",
            json={"sourceUri": str(model), "modelId": "canary"},
            headers=import_headers or {},
            timeout=60,
        )
        if imported.status_code != 200:
            raise SystemExit(f"benchmark: import refused: {imported.text}")
        if fleet.runner == "embedded":
            time.sleep(20)  # the workers load TensorFlow before their first job
        yield Service(base, root, store_url)


def wait_done(root: str, name: str, headers: dict | None = None) -> dict:
    while True:
        operation = httpx.post(
            f"{root}/v1beta1/{name}:wait", json={"timeout": "30s"}, headers=headers or {}, timeout=60
        ).json()
        if operation["done"]:
            return operation


def throughput(model: Path, workers: int, jobs: int, work: Path, fleet: Fleet, formats=MIXED) -> dict:
    with running_service(model, workers, work, fleet) as service:
        started = time.perf_counter()

        def post(i: int) -> str:
            body = {
                "outputConfig": {
                    "modelFormat": formats[i % len(formats)],
                    # Every export into one folder: their names must all differ.
                    "gcsDestination": {"outputUriPrefix": str(work / f"out-{workers}" / "all")},
                }
            }
            answer = httpx.post(f"{service.base}/models/canary:export", json=body, timeout=60)
            if answer.status_code != 200:
                raise SystemExit(f"benchmark: export {i} refused: {answer.text}")
            return answer.json()["name"]

        names = [post(i) for i in range(jobs)]
        for name in names:
            if "error" in (operation := wait_done(service.root, name)):
                raise SystemExit(f"benchmark: {name} failed: {operation['error']}")
        seconds = time.perf_counter() - started
        folders = [p for p in (work / f"out-{workers}" / "all").iterdir() if not p.name.startswith(".")]
        if len(folders) != jobs or len(set(names)) != jobs:
            raise SystemExit(f"benchmark: {jobs} exports made {len(folders)} folders ({len(set(names))} operations)")
    return {
        "runner": fleet.runner,
        "workers": workers,
        "jobs": jobs,
        "formats": list(formats),
        "seconds": round(seconds, 2),
        "per_hour": round(jobs * 3600 / seconds),
    }


def burst(model: Path, workers: int, jobs: int, clients: int, limit: int, work: Path, fleet: Fleet) -> dict:
    """`jobs` tflite exports posted at once by `clients` principals (a token each), `limit`
    active exports per principal. A refused post (RESOURCE_EXHAUSTED) is posted again a second
    later, as a client would, until every export is accepted; then each must end succeeded with
    a folder of its own, and the store's create and end times must show no principal above its
    limit at any moment."""
    tokens = {f"client-{i:02d}": secrets.token_hex(16) for i in range(clients)}
    tokens["admin"] = secrets.token_hex(16)
    grants = [{"permissions": ["automl.models.export", "automl.operations.get"], "resources": ["projects/bench/*"]}]
    auth = {
        "principals": {
            name: {
                "token_sha256": [hashlib.sha256(token.encode()).hexdigest()],
                "grants": grants
                + (
                    [{"permissions": ["automl.models.create"], "resources": ["projects/bench/*"]}]
                    if name == "admin"
                    else []
                ),
            }
            for name, token in tokens.items()
        }
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "auth.json").write_text(json.dumps(auth))
    extra = {"EXPORTER_AUTH_FILE": str(work / "auth.json"), "EXPORTER_MAX_ACTIVE_EXPORTS_PER_PRINCIPAL": str(limit)}
    admin = {"authorization": f"Bearer {tokens['admin']}"}
    destination = str(work / f"out-{workers}" / "all")
    body = {"outputConfig": {"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": destination}}}
    with running_service(model, workers, work, fleet, extra, admin) as service:
        refusals: list[int] = [0] * jobs
        first_wave: list[int] = [0] * jobs
        go = threading.Barrier(jobs)

        def client_export(i: int) -> str:
            headers = {"authorization": f"Bearer {tokens[f'client-{i % clients:02d}']}"}
            go.wait()  # every post leaves at the same moment
            while True:
                answer = httpx.post(f"{service.base}/models/canary:export", json=body, headers=headers, timeout=120)
                if answer.status_code == 200:
                    first_wave[i] = int(refusals[i] == 0)
                    name = answer.json()["name"]
                    break
                if answer.json()["error"]["status"] != "RESOURCE_EXHAUSTED":
                    raise SystemExit(f"benchmark: export {i} refused: {answer.text}")
                refusals[i] += 1
                time.sleep(1)
            if "error" in (operation := wait_done(service.root, name, headers)):
                raise SystemExit(f"benchmark: {name} failed: {operation['error']}")
            return name

        started = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            names = list(pool.map(client_export, range(jobs)))
        seconds = time.perf_counter() - started
        folders = [p.name for p in Path(destination).iterdir() if not p.name.startswith(".")]
        staging = [p.name for p in Path(destination).iterdir() if p.name.endswith(".partial")]
        store = Store(service.store_url)
        rows = [store.get_operation(name) for name in names]
        store.engine.dispose()
    outputs = {row.output_dir for row in rows}
    peak = max_active_per_principal(rows)
    result = {
        "runner": fleet.runner,
        "workers": workers,
        "jobs": jobs,
        "clients": clients,
        "limit_per_client": limit,
        "seconds": round(seconds, 2),
        "per_hour": round(jobs * 3600 / seconds),
        "operations": len(set(names)),
        "succeeded": sum(row.state == "succeeded" for row in rows),
        "folders": len(folders),
        "distinct_output_dirs": len(outputs),
        "staging_left": len(staging),
        "attempts": dict(Counter(row.attempts for row in rows)),
        "first_wave_accepted": sum(first_wave),
        "refused_posts": sum(refusals),
        "max_active_per_client": peak,
    }
    problems = []
    if not (result["operations"] == result["succeeded"] == result["folders"] == result["distinct_output_dirs"] == jobs):
        problems.append("every export must end succeeded with a folder of its own")
    if staging:
        problems.append(f"staging folders left: {staging}")
    if any(count > limit for count in peak.values()):
        problems.append(f"a client had more than {limit} exports active at once: {peak}")
    if problems:
        raise SystemExit(f"benchmark: burst: {'; '.join(problems)}: {json.dumps(result)}")
    return result


def max_active_per_principal(rows) -> dict[str, int]:
    """The most operations each principal had queued or running at one moment, from the store's
    create and end times (an end and a create at the same instant: the end first)."""
    events: dict[str, list[tuple]] = {}
    for row in rows:
        events.setdefault(row.principal, []).extend([(row.create_time, 1), (row.update_time, -1)])
    peaks = {}
    for principal, changes in events.items():
        active = peak = 0
        for _, change in sorted(changes):
            active += change
            peak = max(peak, active)
        peaks[principal] = peak
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--burst", type=int, default=0, help="also: this many tflite exports from --clients at once")
    parser.add_argument("--clients", type=int, default=20, help="the burst's clients, a principal each")
    parser.add_argument("--limit", type=int, default=2, help="the burst's active exports per client (principal)")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--runner", choices=("embedded", "celery"), default="embedded", help="who runs the exports")
    parser.add_argument("--broker-url", help="celery: the broker (default: a redis-server of the benchmark's own)")
    parser.add_argument(
        "--pg-admin",
        default=Fleet.pg_admin,
        help="celery: PostgreSQL, where the benchmark makes (and drops) the fleet's database",
    )
    args = parser.parse_args()
    if args.burst and args.burst < args.clients:
        parser.error(f"--burst ({args.burst}) must be at least --clients ({args.clients})")
    fleet = Fleet(args.runner, args.broker_url, args.pg_admin)
    model = canary()
    result: dict = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_cache:
            result["cache"] = cache_ratio(model, args.repeats, Path(work))
        if not args.skip_throughput:
            result["throughput"] = [
                throughput(model, n, args.jobs, Path(work) / f"throughput-{n}", fleet) for n in (1, 2)
            ]
        if args.burst:
            result["burst"] = burst(model, 2, args.burst, args.clients, args.limit, Path(work) / "burst", fleet)
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
            f"| {row['jobs']} mixed exports, {row['workers']} {row['runner']} worker(s) | {row['per_hour']} per hour |"
        )
    if len(result.get("throughput", [])) == 2:
        one, two = result["throughput"]
        lines.append(f"| 2 workers / 1 worker | {two['per_hour'] / one['per_hour']:.2f}x |")
    if burst_row := result.get("burst"):
        b = burst_row
        lines.append(
            f"| {b['jobs']} tflite exports from {b['clients']} clients at once (limit {b['limit_per_client']} active "
            f"each), {b['workers']} {b['runner']} workers | all {b['succeeded']} ended succeeded, {b['folders']} "
            f"distinct folders, attempts {b['attempts']}; first wave {b['first_wave_accepted']} accepted, "
            f"{b['refused_posts']} refused posts retried; most active per client "
            f"{max(b['max_active_per_client'].values())}; {b['seconds']:.0f} s, {b['per_hour']} per hour |"
        )
    save("fleet", result, "\n".join(lines))


if __name__ == "__main__":
    main()
