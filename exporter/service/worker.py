"""A worker process of the embedded pool: claims export jobs from the store and runs them, one at
a time, through the one job function (``exporter.service.jobs``).

TensorFlow is imported here, once at start, and never in the API process. SIGTERM (the server
stopping) lets the running job drain for ``drain_seconds`` and then hands it back to the queue;
a worker whose server died does the same and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from exporter.service.jobs import drain_on_sigterm, run_operation
from exporter.service.settings import ServiceSettings
from exporter.service.store import Store

PARENT_PID = os.getppid()
# The exit status of a worker that exits to be replaced (not a failure: its job had finished).
RECYCLED = 0


def rss_mb() -> float:
    """This process's resident memory now, in MiB (VmRSS; 0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def should_recycle(settings: ServiceSettings, jobs_done: int) -> str | None:
    """Why this worker should exit after its last job (the pool starts a fresh one), or None."""
    if jobs_done >= settings.worker_max_jobs:
        return f"{jobs_done} jobs done (EXPORTER_WORKER_MAX_JOBS={settings.worker_max_jobs})"
    rss = rss_mb()
    if rss > settings.worker_max_rss_mb:
        return f"{rss:.0f} MiB resident (EXPORTER_WORKER_MAX_RSS_MB={settings.worker_max_rss_mb})"
    return None


def worker_main(settings_json: str, owner: str) -> None:
    """Entry point of a spawned worker process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    settings = ServiceSettings.model_validate_json(settings_json)
    os.nice(settings.worker_niceness)  # conversions yield the CPU to the API
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    drain_on_sigterm(stopping)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops its workers

    def stop_if_orphaned() -> None:
        if os.getppid() != PARENT_PID:  # the server died: stop as on SIGTERM
            stopping.set()

    store = Store(settings.store_url)
    import tensorflow  # noqa: F401  (once, before the first job, not during it)

    jobs_done = 0
    while not stopping.is_set():
        stop_if_orphaned()
        try:
            ran = run_operation(store, settings, owner, stopping=stopping, on_beat=stop_if_orphaned)
        except Exception as error:  # noqa: BLE001  (the store is down: its jobs are requeued when it is back)
            print(f"exporter worker {owner}: store unavailable: {error}", file=sys.stderr, flush=True)
            stopping.wait(1.0)
            continue
        if not ran:
            stopping.wait(settings.poll_seconds)
            continue
        jobs_done += 1
        # TensorFlow and the converters keep memory they never give back: past a limit the worker
        # exits with status RECYCLED, its job finished, and the pool starts a fresh one.
        if reason := should_recycle(settings, jobs_done):
            print(f"exporter worker {owner}: recycled after {reason}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(RECYCLED)
