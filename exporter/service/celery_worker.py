"""`exporter worker`: a Celery worker that runs export jobs, on any machine that reaches the
broker, the store and the model storage.

One job at a time per process (the solo pool: the job runs in the worker's main process, so a
kill -9 of the worker ends its job too, and the store requeues it). SIGTERM starts Celery's warm
shutdown; the running job drains for ``drain_seconds`` and is then handed back to the queue. The
drain starts when the signal arrives, not when Celery's handler runs (``jobs.drain_on_sigterm``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from exporter.service.celery_runner import DEFAULT_QUEUE, FORMAT_QUEUES, TASK, make_celery
from exporter.service.jobs import drain_on_sigterm, run_operation
from exporter.service.settings import ServiceSettings
from exporter.service.store import Store

log = logging.getLogger("exporter.worker")


def queues_here() -> list[str]:
    """The queues this machine can serve: every format, plus docker where a Docker engine is
    reachable and edgetpu_tflite where an Edge TPU compiler is found."""
    from containers.edgetpu_compiler import find_compiler
    from containers.engine import EngineBuilder
    from exporter.core.errors import ExportError

    queues = [DEFAULT_QUEUE]
    try:
        find_compiler()
        queues.append(FORMAT_QUEUES["edgetpu_tflite"])
    except ExportError:
        pass
    if EngineBuilder.reachable() is not None:
        queues.append(FORMAT_QUEUES["docker"])
    return queues


def start_worker(settings: ServiceSettings, queues: list[str], name: str | None = None) -> None:
    """Run a Celery worker until it is stopped (SIGTERM: warm shutdown with drain)."""
    from celery import signals

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    os.nice(settings.worker_niceness)  # conversions yield the CPU to an API on the same machine
    store = Store(settings.store_url)  # the server migrates; a worker only connects
    owner = f"{socket.gethostname()}/celery/{os.getpid()}/{uuid.uuid4().hex[:8]}"
    stopping = threading.Event()
    app = make_celery(settings)

    @app.task(name=TASK, ignore_result=True)
    def export(op_id: str) -> None:
        if not run_operation(store, settings, owner, op_id, stopping=stopping):
            log.info("%s: not claimed (running elsewhere, done or gone): a repeated delivery", op_id)

    def on_shutdown(**_) -> None:
        stopping.set()

    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    drain_on_sigterm(stopping)
    import tensorflow  # noqa: F401  (once, before the first job, not during it)

    app.worker_main(
        argv=[
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={','.join(queues)}",
            f"--hostname={name or owner.replace('/', '-')}@{socket.gethostname()}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
