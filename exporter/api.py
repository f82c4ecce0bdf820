"""The engine from Python, for notebooks and scripts: one call per export, a typed result.

    import exporter

    result = exporter.export("my_model", "tflite", output="exports", quantization="uint8")
    print(result.folder, result.artifacts, result.agreement, result.accuracy)

The call takes what the command line takes (a model folder, a bare SavedModel folder or a Keras
``.keras``/``.h5`` file; a format; an output folder, ``file:///dir``, ``gs://bucket/dir``, or an
image URI for ``docker``; the format's params as keyword arguments) and checks it by the same
formats table. Errors are the same ``ExportError`` (a google.rpc code and a message naming the
argument). TensorFlow's own log is kept out of the way unless ``verbose=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.errors import ExportError, FieldViolation


@dataclass(frozen=True)
class Export:
    """A published export: where it is, what it holds, and what its verification measured."""

    folder: str  # the export folder (a local path, or a gs:// URI), or the pushed image for docker
    format: str
    params: dict[str, str]
    artifacts: list[Path]  # the files written (full paths for a local folder, relative otherwise)
    checks: dict[str, dict]  # each check as export_report.json records it
    agreement: float | None  # share of decided held-out images whose top-1 matches the source's
    accuracy: float | None  # the artifact's top-1 accuracy on labelled held-out images (None: no labels)
    source_accuracy: float | None
    seconds: dict[str, float]  # each stage's time: load, convert, verify, publish
    report: dict = field(repr=False)  # export_report.json in full


def _quiet_tensorflow() -> None:
    # Before TensorFlow loads: its C++ start-up lines (CUDA probing, oneDNN notes) would bury the result.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")


@contextlib.contextmanager
def _logs(verbose: bool) -> Iterator[None]:
    """TensorFlow's and Keras's logs and warnings kept out of the caller's output, unless verbose."""
    if verbose:
        yield
        return
    from exporter.terminal import NativeStderr

    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl", "keras", "h5py")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        # The C++ side (absl, MLIR, XNNPACK) writes to file descriptor 2 past Python: set aside too.
        with warnings.catch_warnings(), NativeStderr():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _result(output_dir: str, report: dict, seconds: dict[str, float]) -> Export:
    check = report["checks"].get("verification", {})
    decided = check.get("decided")
    local = not output_dir.startswith("gs://") and Path(output_dir).is_dir()
    return Export(
        folder=output_dir,
        format=report["modelFormat"],
        params=dict(report["params"]),
        artifacts=[Path(output_dir) / a["path"] if local else Path(a["path"]) for a in report["artifacts"]],
        checks=report["checks"],
        agreement=check["agreeing"] / decided if decided else None,
        accuracy=check.get("artifact_accuracy"),
        source_accuracy=check.get("source_accuracy"),
        seconds=dict(seconds),
        report=report,
    )


def export(
    model: str | Path,
    format: str = "tflite",  # the word users type (the CLI's --format), though a builtin's name
    *,
    output: str | Path,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    sandbox: bool = False,
    verbose: bool = False,
    **params: Any,
) -> Export:
    """Export `model` to `format`, verified, into a new ``model-export-...`` folder under `output`.

    `params` are the format's params (``exporter formats`` lists them), e.g. ``quantization="uint8"``
    or ``max_disagreement=0.01``; values may be given as numbers. `images` is a folder of calibration
    and held-out images when the model folder has none, `labels` a labels file when it has no
    ``dict.txt``, `input_size` (height, width) when the signature leaves it unknown. The conversion
    and verification run in a child process under the ``EXPORTER_SANDBOX_*`` CPU, memory and
    wall-clock limits; `sandbox` also confines them with bubblewrap (no network, read-only files):
    for models you did not make.

    Example: ``exporter.export("my_model.keras", "tf_js", output="exports").folder`` is the new
    export folder under ``exports/``.

    Raises ``ExportError``: INVALID_ARGUMENT naming the argument, NOT_FOUND, FAILED_PRECONDITION
    when the artifact misses its verification (the message says which params would pass), etc.
    """
    from exporter.cli_request import check_model_path, format_from_flag, output_config

    choice = format_from_flag(format)
    text_params = {key: str(value) for key, value in params.items()}
    config = output_config(choice.name, str(output), text_params)
    try:
        from exporter.core.request import parse_output_config

        parse_output_config(config)
    except ExportError as error:  # said in this call's own words: format=, output=, the param's name
        if not error.violations:
            raise
        raise ExportError.invalid(
            [FieldViolation(_argument(v.field), v.description) for v in error.violations]
        ) from None
    check_model_path(Path(model), flag="model")
    _quiet_tensorflow()
    from exporter.run import export_model
    from exporter.sandbox import BUBBLEWRAP, LIMITS_ONLY, Sandbox

    with _logs(verbose):
        result = export_model(
            model,
            config,
            images=images,
            labels=labels,
            input_size=input_size,
            sandbox=Sandbox.from_environment(BUBBLEWRAP if sandbox else LIMITS_ONLY),
        )
    return _result(result.output_dir, result.report, result.seconds)


def _argument(field_path: str) -> str:
    """A request field as this call's argument: outputConfig.params.quantization -> quantization."""
    if field_path.startswith("outputConfig.params."):
        return field_path.removeprefix("outputConfig.params.")
    if field_path == "outputConfig.modelFormat":
        return "format"
    if "Destination" in field_path:
        return "output"
    return field_path


def verify(
    export_folder: str | Path,
    model: str | Path,
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    verbose: bool = False,
) -> dict[str, dict]:
    """Run an export's verification again against its source; returns the checks, raises
    ``ExportError`` (FAILED_PRECONDITION) when one misses its tolerance."""
    _quiet_tensorflow()
    from exporter.run import verify_export

    with _logs(verbose):
        return verify_export(export_folder, model, images=images, labels=labels, input_size=input_size)


__all__ = ["Export", "export", "verify"]
