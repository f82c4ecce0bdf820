"""The one job function, for both job runners (the embedded pool and Celery): claim an operation
in the store, run its export, record its one result.

The store's claim decides who runs an operation; a job delivered twice gets a refused claim and
does nothing. While the job runs, a heartbeat thread renews the claim every second. From the start
of the publish stage to the recorded result the job holds the operation's row
(``Store.publishing``): a job whose claim is no longer current (it stalled, and the operation was
handed to another worker) publishes nothing and its result is dropped. Any exception ends the
operation with its cause; none ends the worker.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import OperationalError

from exporter.cache import ExportCache
from exporter.core.clock import rfc3339_millis
from exporter.core.errors import Code, ExportError
from exporter.core.formats import DestinationKind
from exporter.core.request import ExportRequest, parse_output_config
from exporter.destinations.local import local_path
from exporter.service.outputs import check_destination, output_roots, project_of
from exporter.service.protection import export_sandbox
from exporter.service.settings import ServiceSettings
from exporter.service.store import OperationRow, State, Store

log = logging.getLogger("exporter.jobs")

# progressPercent as each stage of an export ends (the publish ends with the result: 100).
STAGE_PERCENT = {"load": 10, "convert": 50, "verify": 85}
HEARTBEAT_SECONDS = 1.0


class Heartbeat(threading.Thread):
    """Renews the claim every second; `lost` is set once the claim is no longer current.
    `on_beat` runs at each beat (an embedded worker checks that its server still lives)."""

    def __init__(self, store: Store, row: OperationRow, lease_seconds: float, on_beat: Callable[[], None] | None):
        super().__init__(daemon=True, name=f"heartbeat-{row.id}")
        self.store, self.row, self.lease_seconds, self.on_beat = store, row, lease_seconds, on_beat
        self.stopped, self.lost = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            if self.on_beat is not None:
                self.on_beat()
            try:
                if not self.store.renew(self.row.id, self.row.fence, self.lease_seconds):
                    self.lost.set()
            except Exception as error:  # noqa: BLE001  (the store is down a moment: beat again)
                log.warning("heartbeat of %s failed: %s", self.row.name, error)


class Drain(threading.Thread):
    """On a stop request (SIGTERM), lets the running job finish for up to `drain_seconds`, then
    hands it back to the queue (not counted as an attempt) and ends the process: a conversion in
    progress cannot be interrupted otherwise, and the next holder starts it again."""

    def __init__(self, store: Store, row: OperationRow, stopping: threading.Event, drain_seconds: float):
        super().__init__(daemon=True, name=f"drain-{row.id}")
        self.store, self.row, self.stopping, self.drain_seconds = store, row, stopping, drain_seconds
        self.done = threading.Event()
        # Held by whichever ends the attempt: the job recording its end, or the drain handing it
        # back. Killing the job's child processes makes the job fail (a sandbox finds its child
        # gone); that failure must not be recorded as the operation's end while it is handed back.
        self.ending = threading.Lock()

    def run(self) -> None:
        while not self.done.is_set():
            if self.stopping.wait(0.2):
                break
        if self.done.is_set() or self.done.wait(self.drain_seconds):
            return
        with self.ending:
            if self.done.is_set():
                return  # the job recorded its end meanwhile
            end_child_processes()  # before the hand-back: none may write into the next holder's destination
            handed = self.store.hand_back(self.row.id, self.row.fence)
            log.warning(
                "stopping: %s %s after %gs of drain",
                self.row.name,
                "handed back" if handed else "not held",
                self.drain_seconds,
            )
            logging.shutdown()
            os._exit(0)

    def end_job(self) -> None:
        """The job ended: from here the drain does nothing. Blocks for good (the process exits)
        when the drain is handing the job back."""
        with self.ending:
            self.done.set()


def end_child_processes() -> None:
    """Kill every process this one started (a tensorflowjs conversion, Node.js): they outlive an
    os._exit, and one still writing into the job's staging folder would recreate it after the next
    holder removed it."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)


def drain_on_sigterm(stopping: threading.Event) -> None:
    """Set `stopping` as soon as SIGTERM arrives, not when its Python handler runs: Python runs a
    handler only between two bytecodes of the main thread, which a conversion holds in one C call
    for seconds, so under load a job could end before its worker "heard" the SIGTERM. The signal's
    number is written to a wakeup pipe the moment it arrives; a thread reading the pipe sets
    `stopping`. Call from the main thread, with a Python handler installed for SIGTERM (Celery's
    warm-shutdown one, or the embedded worker's)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # required by set_wakeup_fd: a full pipe must never block a signal
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        while received := os.read(read_end, 64):
            if signal.SIGTERM in received:  # one byte per signal, its number
                stopping.set()

    threading.Thread(target=watch, name="sigterm-watch", daemon=True).start()


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


def remove_dead_staging(row: OperationRow, request: ExportRequest, options: dict) -> list[str]:
    """Staging folders that earlier attempts of this operation left in a local destination.

    Every attempt of an operation stages under the same final name (it carries the create time,
    unique per destination), so ``.model-export-*-<create time>.*.partial`` names only this
    operation's. Each is removed through the destination, which reaches the folder without
    following links."""
    from exporter.destinations import open_destination

    folder = local_path(request.destination) if request.row.destination is DestinationKind.GCS else None
    if folder is None or not folder.is_dir():
        return []
    pattern = f".model-export-*-{rfc3339_millis(row.create_time)}.*.partial"
    dead = [name for name in os.listdir(folder) if fnmatch.fnmatchcase(name, pattern)]
    if dead:
        destination = open_destination(request, **options)
        for name in dead:
            destination.discard(Path(name))
    return dead


def earlier_publish(row: OperationRow, request: ExportRequest, options: dict, model: str) -> tuple[str, dict] | None:
    """(where, report) of what an earlier attempt of this operation published but could not
    record, else None. Publish is idempotent per operation: the final name carries the create time,
    unique per destination, and the report found there must be of this very request (create time,
    format, params and model content), not merely of the same name."""
    from exporter.core.clock import export_folder_name
    from exporter.core.model_source import read_model
    from exporter.destinations import open_destination

    source = read_model(model)
    found = open_destination(request, **options).find_published(
        export_folder_name(source.display_name, row.create_time)
    )
    if found is None:
        return None
    report = found[1]
    same = (
        report.get("createTime") == rfc3339_millis(row.create_time)
        and report.get("modelFormat") == request.model_format
        and report.get("params") == request.params
        and (report.get("model") or {}).get("digest") == source.content_digest()
    )
    return found if same else None


# Why an operation failed after its last attempt lost its worker. Every counted attempt that ends
# without a result ends this way (any error in a job ends the operation), so it held for each.
LOST_WORKER = (
    "the job's worker stopped answering in each attempt (it died: out of memory, killed or its machine lost; "
    "or it stalled)"
)


def clean_up_ended(settings: ServiceSettings, row: OperationRow) -> None:
    """An operation that ended with its worker lost (failed after its last attempt, or
    cancelled) gets no later attempt to remove the staging folders its attempts left."""
    if not State(row.state).done:
        return  # queued again: the next attempt removes them
    try:
        request = parse_output_config(row.output_config)
        if dead := remove_dead_staging(row, request, destination_options(settings, row, request)):
            log.info("%s: removed staging folders of its lost attempts: %s", row.name, ", ".join(dead))
    except Exception:  # noqa: BLE001  (a destination no longer allowed or unreachable: left as it is)
        log.exception("%s: staging folders of its lost attempts not removed", row.name)


def export_cache(settings: ServiceSettings) -> ExportCache | None:
    if settings.export_cache_dir is None:
        return None
    return ExportCache(settings.export_cache_dir, settings.export_cache_mb << 20)


def job_error(error: BaseException) -> ExportError:
    """The operation's error for any exception a job raised: its cause, never a dead worker.

    google-auth's errors (raised where gs:// is used) say which credential is missing or refused,
    wherever they are in the cause chain."""
    from google.auth import exceptions as auth

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, auth.DefaultCredentialsError):
            return ExportError(
                Code.FAILED_PRECONDITION,
                "no Google Cloud credentials on the worker for the gs:// destination or source: set "
                f"GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run where application default "
                f"credentials exist ({cause})",
            )
        if isinstance(cause, auth.RefreshError):
            return ExportError(Code.UNAUTHENTICATED, f"Google Cloud refused the worker's credentials: {cause}")
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, ExportError):
        return error
    return ExportError(Code.INTERNAL, f"the export failed: {type(error).__name__}: {error}")


def run_operation(
    store: Store,
    settings: ServiceSettings,
    owner: str,
    op_id: str | None = None,
    *,
    stopping: threading.Event | None = None,
    on_beat: Callable[[], None] | None = None,
) -> bool:
    """Claim `op_id` (else the oldest queued operation) for `owner` and run it to its result.
    False when there was nothing to claim (a job delivered again, or an empty queue)."""
    row = store.claim(owner, settings.lease_seconds, op_id)
    if row is None:
        return False
    heartbeat = Heartbeat(store, row, settings.lease_seconds, on_beat)
    heartbeat.start()
    drain = Drain(store, row, stopping, settings.drain_seconds) if stopping is not None else None
    if drain is not None:
        drain.start()
    try:
        state, values = _attempt(store, settings, row, heartbeat)
    finally:
        heartbeat.stopped.set()
        if drain is not None:
            drain.end_job()
    if state is None:
        return True  # recorded in the publish transaction
    if not store.finish(row.id, row.fence, state, **values):
        log.warning("%s: attempt %d's result dropped: its claim is no longer current", row.name, row.fence)
    return True


def _attempt(
    store: Store, settings: ServiceSettings, row: OperationRow, heartbeat: Heartbeat
) -> tuple[State | None, dict]:
    """Run the export; (None, {}) when the result was recorded with the publish, else the end
    to record."""
    from exporter.run import export_model

    publishing = store.publishing(row.id, row.fence)

    def progress(stage: str, event: str) -> None:
        if stage == "publish":
            if event == "start":
                check_cancel()
                # Held from here to the recorded result: a stale claim publishes nothing.
                publishing.__enter__()
            return
        check_cancel()
        if event == "done":
            try:
                store.progress(row.id, row.fence, STAGE_PERCENT[stage])
            except OperationalError as error:  # the store is down a moment: the export goes on
                log.warning("%s: progress not recorded: %s", row.name, error.orig)

    def check_cancel() -> None:
        if heartbeat.lost.is_set():
            raise ExportError(Code.ABORTED, "this attempt's claim on the operation is no longer current")
        try:
            cancelled = store.cancel_requested(row.id)
        except OperationalError as error:  # asked again at the next stage
            log.warning("%s: cancel not checked: %s", row.name, error.orig)
            cancelled = False
        if cancelled:
            raise ExportError(Code.CANCELLED, "the operation was cancelled")

    try:
        model = store.get_model(row.model_name)
        if model is None:
            raise ExportError(Code.NOT_FOUND, f"model {row.model_name} no longer exists")
        request = parse_output_config(row.output_config)
        options = destination_options(settings, row, request)
        if row.fence > 1 and (dead := remove_dead_staging(row, request, options)):
            log.info("%s: removed staging folders of earlier attempts: %s", row.name, ", ".join(dead))
        if row.fence > 1 and (earlier := earlier_publish(row, request, options, model.path)) is not None:
            # An earlier attempt published, and the store dropped before its result was recorded.
            log.info("%s: recording what an earlier attempt published: %s", row.name, earlier[0])
            check_cancel()
            publishing.__enter__()
            output_dir, report = earlier
            folder = request.row.destination is DestinationKind.GCS
            publishing.finish(
                State.SUCCEEDED, progress_percent=100, output_dir=output_dir if folder else None, report=report
            )
            return None, {}
        sandbox = export_sandbox(settings)  # an imported model is not trusted: refused without it
        result = export_model(
            model.path,
            row.output_config,
            progress=progress,
            started=row.create_time,
            destination_options=options,
            sandbox=sandbox,
            keep_failed_report=False,  # stored with the operation instead, served by :exportReport
            cache=export_cache(settings),
        )
        # outputInfo has only gcsOutputDirectory: a pushed image is named in the report instead.
        folder = request.row.destination is DestinationKind.GCS
        recorded = publishing.finish(
            State.SUCCEEDED,
            progress_percent=100,
            output_dir=result.output_dir if folder else None,
            report=result.report,
        )
        if not recorded:
            log.warning("%s: published without a held claim; result not recorded", row.name)
        return None, {}
    except BaseException as raised:  # noqa: BLE001  (any cause ends the operation, not the worker)
        publishing.close()  # before the end is recorded in another transaction
        if not isinstance(raised, Exception):
            raise  # KeyboardInterrupt, SystemExit: the process stops; the store requeues its job
        error = job_error(raised)
        if not isinstance(raised, ExportError):
            log.exception("%s failed", row.name)
        state = State.CANCELLED if error.code is Code.CANCELLED else State.FAILED
        return state, {"error": error.to_status(), "report": getattr(raised, "report", None)}
    finally:
        publishing.close()
