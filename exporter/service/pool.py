"""The embedded pool: N supervised worker processes, replaced when they die.

``concurrent.futures.ProcessPoolExecutor`` is not enough: one SIGKILLed worker breaks the pool
and fails every queued job. Here each worker is its own spawned process holding leases in the
store; the supervisor thread replaces a dead worker and hands its job back to the queue (or fails
it after ``max_attempts``), and also reclaims jobs whose lease expired (a server that died).
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
import uuid

from exporter.service.settings import ServiceSettings
from exporter.service.store import Store
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

    def pids(self) -> dict[str, int]:
        return {owner: process.pid for process, owner in self.workers.values()}

    def _supervise(self) -> None:
        while not self.stopping.wait(0.5):
            for slot, (process, owner) in list(self.workers.items()):
                if process.is_alive():
                    continue
                if process.exitcode == RECYCLED:
                    # Exited on purpose after a finished job (EXPORTER_WORKER_MAX_JOBS or
                    # EXPORTER_WORKER_MAX_RSS_MB): no job of its to hand back, not a failure.
                    log.info("worker %s (pid %s) recycled; replacing it", owner, process.pid)
                    self._spawn(slot)
                    continue
                reason = f"worker process {process.pid} exited with status {process.exitcode}"
                released = self.store.release_lost(owner, self.settings.max_attempts, reason)
                log.warning("%s; %d job(s) handed back; replacing it", reason, released)
                self._spawn(slot)
            self.store.release_lost(None, self.settings.max_attempts, "the worker's lease expired")

    def stop(self) -> None:
        self.stopping.set()
        for process, _ in self.workers.values():
            process.terminate()
        for process, _ in self.workers.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
