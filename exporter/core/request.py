"""The request contract of ``models.export`` (AutoML v1beta1), shared by the API, CLI and Python.

Pydantic checks the shape (field names in lowerCamelCase or the proto's snake_case, unknown
fields refused, string lengths); the rules that depend on the formats table (which format takes
which destination, params and their values) are checked after it. Every problem is collected and
raised once as INVALID_ARGUMENT with a google.rpc.BadRequest field violation each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from exporter.core.errors import ExportError, FieldViolation
from exporter.core.formats import (
    DEFAULT_FORMAT,
    FORMAT_NAMES,
    DestinationKind,
    FormatRow,
    format_row,
)

URI_MAX = 2000
PARAM_MAX = 25000

# [HOSTNAME]/[PROJECT-ID]/[IMAGE] or [HOSTNAME]/[PROJECT-ID]/[IMAGE]:[TAG]; path components
# follow the OCI distribution grammar (lowercase, separators inside), tags Docker's.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_URI = re.compile(
    rf"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?)"
    rf"/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})+)"
    rf"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?$"
)
GCS_URI = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(?P<path>.*))?$")


class _Message(BaseModel):
    """A proto message in JSON: camelCase or snake_case names, nothing unknown."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class GcsDestination(_Message):
    output_uri_prefix: Annotated[StrictStr, Field(max_length=URI_MAX)] = ""


class GcrDestination(_Message):
    output_uri: Annotated[StrictStr, Field(max_length=URI_MAX)] = ""


class ModelExportOutputConfig(_Message):
    model_format: StrictStr | None = ""
    gcs_destination: GcsDestination | None = None
    gcr_destination: GcrDestination | None = None
    params: dict[Annotated[str, Field(max_length=PARAM_MAX)], Annotated[StrictStr, Field(max_length=PARAM_MAX)]] = (
        Field(default_factory=dict)
    )


class ExportModelRequest(_Message):
    """The body of ``POST /v1beta1/{name}:export``."""

    output_config: ModelExportOutputConfig | None = None


@dataclass(frozen=True)
class ExportRequest:
    """A checked request: the format's row, the destination string and the full params."""

    row: FormatRow
    destination: str
    params: dict[str, str]

    @property
    def model_format(self) -> str:
        return self.row.name


def parse_export_body(body: Any) -> ExportRequest:
    """Check the JSON body of an export call (``{"outputConfig": {...}}``)."""
    try:
        request = ExportModelRequest.model_validate(body)
    except ValidationError as error:
        raise ExportError.invalid(_violations_from_pydantic(error, prefix="")) from None
    if request.output_config is None:
        raise ExportError.invalid([FieldViolation("outputConfig", "is required")])
    return check_output_config(request.output_config)


def parse_output_config(data: Any) -> ExportRequest:
    """Check a ``ModelExportOutputConfig`` given as JSON (a dict) or as the pydantic model."""
    if isinstance(data, ModelExportOutputConfig):
        return check_output_config(data)
    try:
        config = ModelExportOutputConfig.model_validate(data)
    except ValidationError as error:
        raise ExportError.invalid(_violations_from_pydantic(error, prefix="outputConfig")) from None
    return check_output_config(config)


def check_output_config(config: ModelExportOutputConfig) -> ExportRequest:
    """The rules that depend on the formats table; raises once with every violation."""
    violations: list[FieldViolation] = []
    name = config.model_format or DEFAULT_FORMAT
    if name not in FORMAT_NAMES:
        violations.append(
            FieldViolation(
                "outputConfig.modelFormat",
                f"{name!r} is not a model format; allowed: {', '.join(FORMAT_NAMES)}",
            )
        )
        raise ExportError.invalid(violations)
    row = format_row(name)

    destination = _check_destination(config, row, violations)
    params = _check_params(config.params, row, violations)
    if violations:
        raise ExportError.invalid(violations)
    return ExportRequest(row=row, destination=destination, params=params)


def _check_destination(config: ModelExportOutputConfig, row: FormatRow, violations: list[FieldViolation]) -> str:
    given = [
        d
        for d, value in ((DestinationKind.GCS, config.gcs_destination), (DestinationKind.GCR, config.gcr_destination))
        if value is not None
    ]
    if len(given) != 1:
        violations.append(
            FieldViolation(
                "outputConfig",
                "exactly one of gcsDestination or gcrDestination is required" + (", not both" if given else ""),
            )
        )
        return ""
    if given[0] is not row.destination:
        violations.append(
            FieldViolation(
                f"outputConfig.{given[0].value}",
                f"not allowed for modelFormat {row.name!r}, which takes {row.destination.value}",
            )
        )
        return ""
    if row.destination is DestinationKind.GCS:
        value = config.gcs_destination.output_uri_prefix
        field, problem = "outputConfig.gcsDestination.outputUriPrefix", _gcs_prefix_problem(value)
    else:
        value = config.gcr_destination.output_uri
        field, problem = "outputConfig.gcrDestination.outputUri", _image_uri_problem(value)
    if problem:
        violations.append(FieldViolation(field, problem))
    return value


def _gcs_prefix_problem(value: str) -> str | None:
    if not value:
        return "is required"
    if "\x00" in value:
        return "must not contain a NUL character"
    if value.startswith("gs://"):
        if not GCS_URI.match(value):
            return f"{value!r} is not a gs://BUCKET/DIR URI with a valid bucket name"
        return None
    if value.startswith("file://"):
        if not value.startswith("file:///"):
            return "a file:// URI must name an absolute path (file:///abs/dir)"
        return None
    if "://" in value:
        return f"unsupported scheme in {value!r}; use gs://, file:/// or a local path"
    return None


def _image_uri_problem(value: str) -> str | None:
    if not value:
        return "is required"
    if not IMAGE_URI.match(value):
        return (
            f"{value!r} is not of the form HOSTNAME/PROJECT-ID/IMAGE or "
            "HOSTNAME/PROJECT-ID/IMAGE:TAG (lowercase repository names)"
        )
    return None


def _check_params(given: dict[str, str], row: FormatRow, violations: list[FieldViolation]) -> dict[str, str]:
    before = len(violations)
    for key, value in given.items():
        param = row.param(key)
        field = f"outputConfig.params.{key}"
        if param is None:
            allowed = ", ".join(p.name for p in row.params) or "none"
            violations.append(FieldViolation(field, f"unknown param for {row.name!r}; allowed keys: {allowed}"))
        elif problem := param.problem(value):
            violations.append(FieldViolation(field, problem))
    params = row.with_defaults(given)
    if len(violations) == before and row.validate is not None:
        for key, problem in row.validate(params):
            violations.append(FieldViolation(f"outputConfig.params.{key}", problem))
    return params


_PYDANTIC_TEXT = {
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object of string values",
}


def _violations_from_pydantic(error: ValidationError, prefix: str) -> list[FieldViolation]:
    violations = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        field = ".".join(part for part in (prefix, path) if part) or "body"
        kind = item["type"]
        if kind == "string_too_long":
            text = f"longer than {item['ctx']['max_length']} characters"
        else:
            text = _PYDANTIC_TEXT.get(kind, item["msg"])
        violations.append(FieldViolation(field, text))
    return violations
