"""One export, start to end: load, convert, verify, publish.

This is the function the CLI, the Python API and the service's workers all call. The
artifact is written into a staging folder, verified there, and only then moved to its final
name; on any error, Ctrl-C included, the staging folder is removed and the final name is never
created. An export that fails after staging (not cancelled) raises ``ExportFailed``: the error's
message says what would make it pass, and the failed attempt's report is kept beside the staging
folder (``exporter.failed_export``), without any artifact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from converters import REGISTRY
from converters.load_scope import shared_context, sharing_loads
from converters.verification import make_reference
from exporter.cache import ExportCache, steps_through_cache
from exporter.core.clock import export_folder_name, rfc3339_millis, utc_now
from exporter.core.errors import Code, ExportError, os_error
from exporter.core.image_bytes_model import classifier_folder, takes_image_bytes
from exporter.core.keras_files import is_keras_file, saved_model_folder
from exporter.core.model_snapshot import model_snapshot
from exporter.core.model_source import ModelSource, read_model
from exporter.core.model_types import CLOUD_MODEL_TYPE
from exporter.core.report import REPORT_FILE, build_report, write_report
from exporter.core.request import ExportRequest, parse_output_config
from exporter.core.stop_request import requested_stop
from exporter.destinations import Destination, open_destination
from exporter.failed_export import (
    ExportFailed,
    convert_reports,
    explain,
    failed_check,
    failed_folder_name,
    failure_report,
    keep_report,
    refuse_failed_report,
    suggested_params,
)
from exporter.sandbox import Sandbox, export_steps

STAGES = ("load", "convert", "verify", "publish")
# progress(stage, event) with event "start" or "done"; the CLI draws it, the worker stores it.
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class ExportResult:
    output_dir: str  # where the export folder was published
    report: dict  # the content of its export_report.json
    seconds: dict[str, float]  # every stage's time, publish included


class StageClock:
    """Times each stage, tells `progress`, and turns unexpected errors into clear ExportErrors."""

    def __init__(self, progress: Progress | None, converter_name: str):
        self.progress = progress or (lambda stage, event: None)
        self.converter_name = converter_name
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(name, "start")
        started = time.perf_counter()
        try:
            yield
        except Exception as error:
            stop = requested_stop()  # a signal's stop, whatever error a library turned it into
            if stop is not None and stop is not error:
                raise stop from error
            if isinstance(error, ExportError):
                raise
            if isinstance(error, OSError):
                raise os_error(error, f"{name} failed") from error
            # a converter's own crash: say where, keep the cause chained
            raise ExportError(
                Code.INTERNAL,
                f"{name} of {self.converter_name} failed: {type(error).__name__}: {error}",
            ) from error
        self.seconds[name] = round(time.perf_counter() - started, 3)
        self.progress(name, "done")


def check_exportable(source: ModelSource, request: ExportRequest) -> None:
    if source.model_type not in request.row.exportable_model_types:
        reason = " (a server-hosted model type)" if source.model_type == CLOUD_MODEL_TYPE else ""
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"a model of type {source.model_type!r}{reason} cannot be exported to "
            f"{request.model_format!r}; exportable model types: "
            f"{', '.join(request.row.exportable_model_types)}",
        )


@contextmanager
def model_folder(model: str | Path) -> Iterator[Path]:
    """The model folder to read: `model` itself, or a private folder with the SavedModel the engine
    made from a Keras file (``.keras``, ``.h5``) or from a serving model that takes encoded images
    (``image_bytes``: AutoML's and this engine's tf_saved_model exports), for as long as the block runs."""
    if is_keras_file(model) and not Path(model).is_dir():
        with saved_model_folder(model) as folder:
            yield folder
    elif takes_image_bytes(model):
        with classifier_folder(model) as folder:
            yield folder
    else:
        yield Path(model)


@sharing_loads  # the private copy of the model, and its loads, are made once per export
def export_model(model: str | Path, output_config: dict[str, Any], **options) -> ExportResult:
    """Export `model` (a model folder, a bare SavedModel folder, or a Keras ``.keras``/``.h5`` file)
    as `output_config` asks; the options are _export_folder's. The model is read from a private
    copy made first (``exporter.core.model_snapshot``): what is checked is what loads."""
    parse_output_config(output_config)  # a bad request is refused before the model is read
    with readable_model(model) as folder:
        return _export_folder(folder, output_config, **options)


@contextmanager
def readable_model(model: str | Path) -> Iterator[Path]:
    """The model folder an export reads: made from a private copy of `model`, once per load scope
    (the exports of one scope read one copy, so its loads are shared)."""
    key = ("readable model", str(Path(model).resolve()))
    with shared_context(key, lambda: _copied_model_folder(model)) as folder:
        yield folder


@contextmanager
def _copied_model_folder(model: str | Path) -> Iterator[Path]:
    with model_snapshot(model) as copy, model_folder(copy) as folder:
        yield folder


@sharing_loads  # the source is loaded and run on its held-out images once per export
def _export_folder(
    model: str | Path,
    output_config: dict[str, Any],
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    progress: Progress | None = None,
    started: datetime | None = None,
    destination_options: dict[str, Any] | None = None,
    destination: Destination | None = None,
    sandbox: Sandbox | None = None,
    keep_failed_report: bool = True,
    cache: ExportCache | None = None,
) -> ExportResult:
    """Export the model folder `model` as `output_config` (a ModelExportOutputConfig) asks.

    `output_config` is the same JSON the REST API takes, e.g.
    ``{"modelFormat": "tflite", "gcsDestination": {"outputUriPrefix": "/tmp/out"},
    "params": {"quantization": "uint8"}}``. `images`, `labels` and `input_size` fill in what the
    model folder lacks (see ``read_model``). `destination_options` are the destination's own options
    (a docker export's ``keep_context``: a new folder that receives the image's build context for
    a rebuild by hand). A `destination` opened (and checked) by the caller is used as it is: its
    path was resolved once, when it was opened, and is not resolved again. With a `sandbox` the convert and verify steps run in its confined child
    process (TensorFlow is imported there, not here); without one they run in this process.
    Raises ExportError (ExportFailed once staged, with the failed attempt's report, kept in a
    ``.<name>.failed`` folder unless `keep_failed_report` is False); returns where the export
    landed and its report. With a `cache`, an artifact converted and verified before for the same
    model content, format and params is reused (``exporter.cache``).
    """
    started = started or utc_now()
    request = parse_output_config(output_config)
    converter = REGISTRY[request.model_format]
    clock = StageClock(progress, request.model_format)

    with clock.stage("load"):
        source = read_model(model, images=images, input_size=input_size, labels=labels)
        source.require_images()
        check_exportable(source, request)
        if destination is None:
            destination = open_destination(request, **(destination_options or {}))
        if sandbox is None:
            converter.prepare()
        else:
            sandbox.check()
        final_name = export_folder_name(source.display_name, started)
    staging = destination.stage(final_name)  # after the load stage: its end may raise a stop
    try:
        real_steps = partial(export_steps, sandbox, converter, source, staging, request.params)
        with steps_through_cache(cache, source, request, staging, rfc3339_millis(started), real_steps) as steps:
            with clock.stage("convert"):
                steps.convert()
            with clock.stage("verify"):
                checks = steps.verify()
        with clock.stage("publish"):
            report = build_report(
                request=request,
                source=source,
                workdir=staging,
                checks=checks,
                timings=dict(clock.seconds),
                created=rfc3339_millis(started),
                sandbox=sandbox.describe() if sandbox else {"mode": "off"},
            )
            report.update(steps.report)  # whether the artifact came from the export cache
            write_report(report, staging)
            output_dir = destination.publish(staging, final_name, report)
            report.update(destination.details)  # a pushed image: digest, bytes uploaded
    except ExportError as error:
        if error.code is Code.CANCELLED:
            raise
        # A destination swapped since stage explains whatever failed after it (a sandbox that
        # could not bind the staging folder, a publish refused): that is the error to give.
        error = destination.replaced_error() or error
        _say_shown_paths(error, str(staging), str(destination.shown(staging)))
        failure = _failed(
            error, request, source, converter, destination, staging, final_name, clock, started, keep_failed_report
        )
        raise failure from error
    finally:
        destination.discard(staging)  # gone already when published
    # The report (written before publishing) times load, convert and verify; the result adds publish.
    return ExportResult(output_dir=output_dir, report=report, seconds=dict(clock.seconds))


def _say_shown_paths(error: ExportError, held: str, shown: str) -> None:
    """Name the staging folder in `error` by the path the user knows, not the descriptor path the
    export wrote through (``/proc/<pid>/fd/<n>``: exporter.destinations.local)."""
    if held != shown and held in error.message:
        error.message = error.message.replace(held, shown)
        error.args = (error.message,)


def _failed(
    error: ExportError,
    request,
    source,
    converter,
    destination,
    staging: Path,
    final_name: str,
    clock,
    started,
    keep: bool,
) -> ExportFailed:
    """The error explained, with the failed attempt's report (kept beside the staging folder)."""
    check = failed_check(error)
    suggestions = suggested_params(request.row, request.params, check)
    partial = build_report(
        request=request,
        source=source,
        workdir=staging,
        checks={},
        timings=dict(clock.seconds),
        created=rfc3339_millis(started),
    )
    for unfinished in ("artifacts", "checks"):  # no artifact of a failed attempt is kept
        partial.pop(unfinished)
    reports = convert_reports(staging, converter.kept_on_failure)
    report = failure_report(error=error, partial=partial, check=check, suggestions=suggestions, reports=reports)
    message = explain(error, check, suggestions)
    report["error"]["message"] = message
    path = None
    # Kept where there is more to read than the error line: a check's numbers, or the convert
    # step's reports (a crash or a full disk leaves nothing behind, as before).
    if keep and (check is not None or reports):
        try:
            folder, shown = destination.keep_folder(staging, failed_folder_name(final_name))
            path = shown / keep_report(folder, report).name
        except OSError as keeping:  # the export's own error matters more: say why nothing was kept
            report["notKept"] = f"{type(keeping).__name__}: {keeping}"
    return ExportFailed(error, message, report, path)


@sharing_loads
def verify_export(export_dir: str | Path, model: str | Path, **options) -> dict:
    """Run an existing export's verification again against its source (a model folder or a Keras
    file, read from a private copy as an export reads it); the options are _verify_folder's."""
    with readable_model(model) as folder:
        return _verify_folder(export_dir, folder, **options)


@sharing_loads
def _verify_folder(
    export_dir: str | Path,
    model: str | Path,
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
) -> dict:
    """Run an existing export's verification again against its source model folder.

    The format and params come from the export's ``export_report.json``. Returns the checks
    (as in the report); raises ExportError when the artifact is outside its tolerance.
    """
    folder = Path(export_dir)
    report_path = folder / REPORT_FILE
    if not report_path.is_file():
        raise ExportError(Code.NOT_FOUND, f"{str(folder)!r} holds no {REPORT_FILE}: not an export of this engine")
    try:
        report = json.loads(report_path.read_text())
        refuse_failed_report(report, folder)
        model_format, params = report["modelFormat"], report["params"]
        converter = REGISTRY[model_format]
    except (ValueError, KeyError) as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"{report_path} is not readable: {error}") from None
    source = read_model(model, images=images, input_size=input_size, labels=labels)
    source.require_images()
    checks = converter.verify(source, folder, params, make_reference(source))
    return {name: check.as_dict() for name, check in checks.items()}
