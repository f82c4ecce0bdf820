"""The embedded pool: N supervised worker processes of `exporter serve`, replaced when they die.

``concurrent.futures.ProcessPoolExecutor`` is not enough: one SIGKILLed worker breaks the pool
and fails every queued job. Here each worker is its own spawned process claiming jobs from the
store; the supervisor thread replaces a dead worker and hands its job back to the queue (or fails
it after ``max_attempts``), and requeues jobs whose holder is gone (heartbeat older than
``liveness_seconds``, or lease expired: a worker of a server that died). Stopping the pool lets the
workers drain, then hands back what they still hold without counting it as an attempt.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
import uuid
from functools import partial

from exporter.service.jobs import LOST_WORKER, clean_up_ended
from exporter.service.settings import ServiceSettings
from exporter.service.store import OperationRow, Store
from exporter.service.worker import RECYCLED, worker_main

log = logging.getLogger("exporter.pool")


class WorkerPool:
    def __init__(self, settings: ServiceSettings, store: Store):
        self.settings, self.store = settings, store
        self.context = multiprocessing.get_context("spawn")  # no fork: TensorFlow is not fork-safe
        self.workers: dict[int, tuple[multiprocessing.Process, str]] = {}
        self.stopping = threading.Event()
        self.monitor = threading.Thread(target=self._supervise, name="pool-supervisor", daemon=True)

    def _spawn(self, slot: int) -> None:
        owner = f"{socket.gethostname()}/{slot}/{uuid.uuid4().hex[:8]}"
        process = self.context.Process(
            target=worker_main,
            args=(self.settings.model_dump_json(), owner),
            name=f"exporter-worker-{slot}",
            daemon=True,
        )
        process.start()
        self.workers[slot] = (process, owner)
        log.info("worker %s started as pid %s", owner, process.pid)

    def start(self) -> None:
        for slot in range(self.settings.workers):
            self._spawn(slot)
        self.monitor.start()

    def submit(self, operation: OperationRow) -> None:
        """Nothing to send: the workers claim queued operations from the store."""

    def pids(self) -> dict[str, int]:
        return {owner: process.pid for process, owner in self.workers.values()}

    def _supervise(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                self._check_workers()
                self.store.release_lost(
                    None,
                    self.settings.max_attempts,
                    LOST_WORKER,
                    liveness_seconds=self.settings.liveness_seconds,
                    on_released=partial(clean_up_ended, self.settings),
                )
            except Exception:  # noqa: BLE001  (the store is down a moment: the next round retries)
                log.exception("pool supervision failed; retrying")

    def _check_workers(self) -> None:
        for slot, (process, owner) in list(self.workers.items()):
            if process.is_alive() or self.stopping.is_set():
                continue
            if process.exitcode == RECYCLED:
                # Exited on purpose after a finished job (EXPORTER_WORKER_MAX_JOBS or
                # EXPORTER_WORKER_MAX_RSS_MB): no job of its to hand back, not a failure.
                log.info("worker %s (pid %s) recycled; replacing it", owner, process.pid)
                self._spawn(slot)
                continue
            reason = f"worker process {process.pid} exited with status {process.exitcode}"
            released = self.store.release_lost(
                owner, self.settings.max_attempts, reason, on_released=partial(clean_up_ended, self.settings)
            )
            log.warning("%s; %d job(s) handed back; replacing it", reason, released)
            self._spawn(slot)

    def stop(self) -> None:
        """SIGTERM every worker: each finishes its job within ``drain_seconds`` or hands it back.
        What a worker that had to be killed still holds is handed back, not counted."""
        self.stopping.set()
        for process, _ in self.workers.values():
            process.terminate()
        for process, owner in self.workers.values():
            process.join(timeout=self.settings.drain_seconds + 5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
            self.store.release_lost(owner, self.settings.max_attempts, "the server stopped", counted=False)
