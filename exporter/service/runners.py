"""The server's job runner, chosen by ``EXPORTER_RUNNER``: the embedded pool (its own worker
processes) or Celery (``exporter worker`` processes anywhere; this server sends them the jobs).

Each has ``start``, ``submit`` (an operation was queued), ``pids`` (for /healthz) and ``stop``.
"""

from __future__ import annotations

from exporter.service.settings import ServiceSettings
from exporter.service.store import OperationRow, Store


class NoRunner:
    """No workers in this process (``workers=0``, or an app made without them for tests)."""

    def start(self) -> None:
        pass

    def submit(self, operation: OperationRow) -> None:
        pass

    def pids(self) -> dict[str, int]:
        return {}

    def stop(self) -> None:
        pass


def job_runner(settings: ServiceSettings, store: Store, start_workers: bool = True):
    if settings.runner == "celery":
        from exporter.service.celery_runner import CeleryRunner

        return CeleryRunner(settings, store)
    if start_workers and settings.workers > 0:
        from exporter.service.pool import WorkerPool

        return WorkerPool(settings, store)
    return NoRunner()
