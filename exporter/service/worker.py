"""A worker process: claims export jobs from the store and runs them, one at a time.

TensorFlow is imported here, once at start, and never in the API process. While a job runs a
heartbeat thread renews its lease; the job's progress callback records each stage and stops
the export (nothing is published) when the operation was cancelled.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from exporter.core.errors import Code, ExportError
from exporter.core.formats import DestinationKind
from exporter.core.request import ExportRequest, parse_output_config
from exporter.destinations.local import local_path
from exporter.service.outputs import check_destination, output_roots, project_of
from exporter.service.protection import export_sandbox
from exporter.service.settings import ServiceSettings
from exporter.service.store import OperationRow, State, Store

# progressPercent as each stage of an export ends.
STAGE_PERCENT = {"load": 10, "convert": 50, "verify": 85, "publish": 95}


PARENT_PID = os.getppid()
# The exit status of a worker that exits to be replaced (not a failure: its job had finished).
RECYCLED = 0


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


def destination_options(settings: ServiceSettings, row: OperationRow, request: ExportRequest) -> dict:
    """The destination checked again as the job starts (settings or folders may have changed
    since it was queued), and, for a local folder, the roots the destination walks from without
    following links, up to the publish."""
    if request.row.destination is not DestinationKind.GCS:
        return {}
    project = project_of(row.name)
    check_destination(request.destination, settings, project)
    if local_path(request.destination) is None:
        return {}  # gs://
    return {"output_roots": [str(root) for root in output_roots(settings, project)]}


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
        sandbox = export_sandbox(settings)  # an imported model is not trusted: refused without it
        result = export_model(
            model.path,
            row.output_config,
            progress=progress,
            started=row.create_time,
            destination_options=destination_options(settings, row, request),
            sandbox=sandbox,
            keep_failed_report=False,  # stored with the operation instead, served by :exportReport
        )
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
        store.finish(row.id, owner, state, error=error.to_status(), report=getattr(error, "report", None))
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

    jobs_done = 0
    while True:
        exit_if_orphaned()
        row = store.claim(owner, settings.lease_seconds)
        if row is None:
            time.sleep(settings.poll_seconds)
            continue
        run_job(store, row, owner, settings)
        jobs_done += 1
        # TensorFlow and the converters keep memory they never give back: past a limit the worker
        # exits with status RECYCLED, its job finished, and the pool starts a fresh one.
        if reason := should_recycle(settings, jobs_done):
            print(f"exporter worker {owner}: recycled after {reason}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(RECYCLED)
