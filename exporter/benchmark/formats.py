"""The --formats list: ``FORMAT[:KEY=VALUE[:KEY=VALUE]]`` entries, checked against the formats table.

``source`` stands for the model folder's own SavedModel (no export), the baseline every other row
is read against. ``docker`` is run as its image holds it: the serving SavedModel under TF Serving.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.errors import Code, ExportError
from exporter.core.formats import FORMAT_NAMES, DestinationKind, format_row
from exporter.core.request import parse_output_config

SOURCE = "source"
DEFAULT_FORMATS = (
    SOURCE,
    "tflite:quantization=float32",
    "tflite:quantization=uint8",
    "tf_saved_model",
    "tf_js",
    "edgetpu_tflite",
    "core_ml",
    "docker",
    "onnx",
    "onnx:quantization=int8",
    "openvino",
    "openvino:quantization=int8",
)


@dataclass(frozen=True)
class FormatSpec:
    model_format: str
    params: tuple[tuple[str, str], ...] = ()  # as given; the export fills in the defaults

    @property
    def params_dict(self) -> dict[str, str]:
        return dict(self.params)

    @property
    def params_text(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.params)

    @property
    def label(self) -> str:
        return f"{self.model_format} {self.params_text}".strip()


def parse_format(text: str) -> FormatSpec:
    name, *pairs = text.strip().split(":")
    params = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExportError(Code.INVALID_ARGUMENT, f"--formats {text!r}: expected FORMAT[:KEY=VALUE...]")
        params.append((key, value))
    if name == SOURCE:
        if params:
            raise ExportError(Code.INVALID_ARGUMENT, f"--formats {text!r}: source takes no params")
        return FormatSpec(SOURCE)
    if name not in FORMAT_NAMES:
        allowed = ", ".join((SOURCE, *FORMAT_NAMES))
        raise ExportError(Code.INVALID_ARGUMENT, f"--formats {text!r}: {name!r} is not a format; allowed: {allowed}")
    config: dict = {"modelFormat": name, "params": dict(params)}
    if format_row(name).destination is DestinationKind.GCR:
        config["gcrDestination"] = {"outputUri": "localhost/benchmark/check"}
    else:
        config["gcsDestination"] = {"outputUriPrefix": "check"}
    try:
        parse_output_config(config)  # the request contract's own check of the params
    except ExportError as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"--formats {text!r}: {error.message}") from None
    return FormatSpec(name, tuple(params))


def parse_formats(texts: list[str] | None) -> list[FormatSpec]:
    """Each entry of each --formats value (comma-separated), in order, duplicates dropped."""
    entries = [entry for text in (texts or DEFAULT_FORMATS) for entry in text.split(",") if entry.strip()]
    return list(dict.fromkeys(parse_format(entry) for entry in entries))
