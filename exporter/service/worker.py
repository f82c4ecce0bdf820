"""A worker process: claims export jobs from the store and runs them, one at a time.

TensorFlow is imported here, once at start, and never in the API process. While a job runs a
heartbeat thread renews its lease; the job's progress callback records each stage and stops
the export (nothing is published) when the operation was cancelled.
"""

from __future__ import annotations

import os
import threading
import time

from exporter.core.errors import Code, ExportError
from exporter.core.formats import DestinationKind
from exporter.core.request import parse_output_config
from exporter.service.settings import ServiceSettings
from exporter.service.store import OperationRow, State, Store

# progressPercent as each stage of an export ends.
STAGE_PERCENT = {"load": 10, "convert": 50, "verify": 85, "publish": 95}


PARENT_PID = os.getppid()


def exit_if_orphaned() -> None:
    """A worker whose server died stops at once; its job's lease runs out and is reclaimed."""
    if os.getppid() != PARENT_PID:
        os._exit(1)


class Heartbeat(threading.Thread):
    def __init__(self, store: Store, op_id: str, owner: str, lease_seconds: float):
        super().__init__(daemon=True)
        self.store, self.op_id, self.owner, self.lease_seconds = store, op_id, owner, lease_seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        renewed = time.monotonic()
        while not self.stopped.wait(1.0):
            exit_if_orphaned()
            if time.monotonic() - renewed >= self.lease_seconds / 3:
                self.store.renew(self.op_id, self.owner, self.lease_seconds)
                renewed = time.monotonic()


def run_job(store: Store, row: OperationRow, owner: str, settings: ServiceSettings) -> None:
    from exporter.run import export_model

    def progress(stage: str, event: str) -> None:
        if store.cancel_requested(row.id):
            raise ExportError(Code.CANCELLED, "the operation was cancelled")
        if event == "done":
            store.progress(row.id, owner, STAGE_PERCENT[stage])

    heartbeat = Heartbeat(store, row.id, owner, settings.lease_seconds)
    heartbeat.start()
    try:
        model = store.get_model(row.model_name)
        if model is None:
            raise ExportError(Code.NOT_FOUND, f"model {row.model_name} no longer exists")
        request = parse_output_config(row.output_config)
        result = export_model(model.path, row.output_config, progress=progress, started=row.create_time)
        # outputInfo has only gcsOutputDirectory: a pushed image is named in the report instead.
        folder = request.row.destination is DestinationKind.GCS
        store.finish(
            row.id,
            owner,
            State.SUCCEEDED,
            progress_percent=100,
            output_dir=result.output_dir if folder else None,
            report=result.report,
        )
    except ExportError as error:
        state = State.CANCELLED if error.code is Code.CANCELLED else State.FAILED
        store.finish(row.id, owner, state, error=error.to_status())
    finally:
        heartbeat.stopped.set()


def worker_main(settings_json: str, owner: str) -> None:
    """Entry point of a spawned worker process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    settings = ServiceSettings.model_validate_json(settings_json)
    os.nice(settings.worker_niceness)  # conversions yield the CPU to the API
    store = Store(settings.store_url)
    import tensorflow  # noqa: F401  (once, before the first job, not during it)

    while True:
        exit_if_orphaned()
        row = store.claim(owner, settings.lease_seconds)
        if row is None:
            time.sleep(settings.poll_seconds)
            continue
        run_job(store, row, owner, settings)
