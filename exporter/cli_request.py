"""What the command line's flags stand for, checked before anything heavy is imported.

The flags become the same ModelExportOutputConfig the REST API takes, checked by the same
request rules; a violation is reported under the flag the user typed (``--format``, ``--output``,
``--param KEY``), not the REST field. A common spelling of a format name (``tfjs``, ``TFLite``,
``coreml``) is taken for the format it plainly means, with a note; the REST contract itself stays
exact. The destination and the model path are checked here too, so a typo or a read-only folder
is answered in well under a second instead of after TensorFlow has loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from exporter.core.errors import Code, ExportError, FieldViolation
from exporter.core.formats import FORMAT_NAMES, DestinationKind, format_row
from exporter.core.keras_files import is_keras_file
from exporter.core.request import ExportRequest, parse_output_config

# Spellings that are not a format's name but plainly mean one, beyond case, "-" and "_".
SPELLINGS = {
    "edgetpu": "edgetpu_tflite",
    "savedmodel": "tf_saved_model",
    "tensorflowjs": "tf_js",
    "mlmodel": "core_ml",
    "mlpackage": "core_ml",
}


def _folded(name: str) -> str:
    return re.sub(r"[-_.\s]", "", name.lower())


FOLDED_FORMATS = {_folded(name): name for name in FORMAT_NAMES} | SPELLINGS


@dataclass(frozen=True)
class FormatChoice:
    name: str  # the format asked for, as the request takes it
    note: str | None  # said to the user when their spelling was mapped


def format_from_flag(typed: str) -> FormatChoice:
    """The modelFormat that ``--format typed`` means; an unknown name is left for the request check."""
    if typed in FORMAT_NAMES:
        return FormatChoice(typed, None)
    meant = FOLDED_FORMATS.get(_folded(typed))
    if meant is None:
        return FormatChoice(typed, None)
    return FormatChoice(meant, f"--format {typed!r} taken as {meant!r}")


def output_config(model_format: str, output: str, params: dict[str, str]) -> dict:
    """The ModelExportOutputConfig JSON that the CLI's flags stand for."""
    config: dict = {"modelFormat": model_format, "params": params}
    known = model_format in FORMAT_NAMES
    if known and format_row(model_format).destination is DestinationKind.GCR:
        config["gcrDestination"] = {"outputUri": output}
    else:
        config["gcsDestination"] = {"outputUriPrefix": output}
    return config


# The request's field paths as the flags that set them (longest prefix first).
FIELD_FLAGS = (
    ("outputConfig.gcsDestination.outputUriPrefix", "--output"),
    ("outputConfig.gcrDestination.outputUri", "--output"),
    ("outputConfig.gcsDestination", "--output"),
    ("outputConfig.gcrDestination", "--output"),
    ("outputConfig.modelFormat", "--format"),
    ("outputConfig.params.", "--param "),
    ("outputConfig", "--format/--output"),
)


def flag_for(field: str) -> str:
    for prefix, flag in FIELD_FLAGS:
        if field == prefix or (prefix.endswith(".") and field.startswith(prefix)):
            return flag + field[len(prefix) :] if prefix.endswith(".") else flag
    return field


def parse_flags(model_format: str, output: str, params: dict[str, str]) -> ExportRequest:
    """The checked request the flags stand for; violations name the flags."""
    try:
        return parse_output_config(output_config(model_format, output, params))
    except ExportError as error:
        if not error.violations:
            raise
        raise ExportError.invalid(
            [FieldViolation(flag_for(v.field), v.description) for v in error.violations]
        ) from None


def check_model_path(model: Path, flag: str = "--model") -> None:
    """The model path names something the engine can read: a folder, or a .keras/.h5 file."""
    if not model.exists():
        raise ExportError(Code.NOT_FOUND, f"{flag} {str(model)!r} does not exist")
    if model.is_dir() or is_keras_file(model):
        return
    raise ExportError(
        Code.INVALID_ARGUMENT,
        f"{flag} {str(model)!r} is a file the engine does not read: give a model folder, a SavedModel "
        "folder, or a Keras .keras/.h5 file",
    )
