"""Resource names and the exact JSON of AutoML v1beta1's Model and google.longrunning Operation.

The Operation and its metadata carry exactly the proto's fields and nothing else: the official
client parses them with ``ignore_unknown_fields=False``. What else the engine knows of an export
lives in its report, served by an extension endpoint.
"""

from __future__ import annotations

import re

from exporter.core.clock import rfc3339_millis
from exporter.core.errors import Code, ExportError, FieldViolation
from exporter.service.store import ModelRow, OperationRow, State

METADATA_TYPE = "type.googleapis.com/google.cloud.automl.v1beta1.OperationMetadata"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"

# A segment of a resource name: what project ids, locations and AutoML ids are made of.
SEGMENT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,126}[A-Za-z0-9])?$")


def check_segments(**segments: str) -> None:
    """INVALID_ARGUMENT naming every malformed segment of a resource name."""
    bad = [
        FieldViolation(
            "name", f"{kind} {value!r} is not a valid resource name segment (letters, digits, '-' and '_', at most 128)"
        )
        for kind, value in segments.items()
        if not SEGMENT.match(value)
    ]
    if bad:
        raise ExportError.invalid(bad)


def parent_name(project: str, location: str) -> str:
    check_segments(project=project, location=location)
    return f"projects/{project}/locations/{location}"


def model_json(row: ModelRow) -> dict:
    return {
        "name": row.name,
        "displayName": row.display_name,
        "createTime": rfc3339_millis(row.create_time),
        "updateTime": rfc3339_millis(row.update_time),
        "imageClassificationModelMetadata": {"modelType": row.model_type},
    }


def operation_json(row: OperationRow) -> dict:
    state = State(row.state)
    details = {"outputInfo": {"gcsOutputDirectory": row.output_dir}} if row.output_dir else {}
    operation = {
        "name": row.name,
        "metadata": {
            "@type": METADATA_TYPE,
            "exportModelDetails": details,
            "progressPercent": row.progress_percent,
            "partialFailures": [],
            "createTime": rfc3339_millis(row.create_time),
            "updateTime": rfc3339_millis(row.update_time),
        },
        "done": state.done,
    }
    if state is State.SUCCEEDED:
        operation["response"] = {"@type": EMPTY_TYPE}
    elif state.done:
        operation["error"] = row.error or {"code": int(Code.UNKNOWN), "message": "no error recorded", "details": []}
    return operation


def status_body(error: ExportError) -> dict:
    """The google.rpc.Status body of an HTTP error response."""
    status = error.to_status()
    return {
        "error": {
            "code": error.code.http_status,
            "message": error.message,
            "status": error.code.name,
            "details": status["details"],
        }
    }
