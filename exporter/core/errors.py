"""One error type for the whole engine, carrying a google.rpc status code.

The same error becomes an HTTP response (google.rpc.Status JSON), an ``Operation.error`` and
the one line that the CLI prints, so every layer raises ``ExportError`` and nothing else.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass, field


class Code(enum.IntEnum):
    """google.rpc.Code, with the HTTP status each maps to (google/rpc/code.proto)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


@dataclass(frozen=True)
class FieldViolation:
    """One entry of a google.rpc.BadRequest: the field path and what is wrong with it."""

    field: str
    description: str


@dataclass
class ExportError(Exception):
    """An error with a google.rpc code, a message for people and, for bad requests, the fields."""

    code: Code
    message: str
    violations: list[FieldViolation] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def invalid(cls, violations: list[FieldViolation]) -> ExportError:
        """INVALID_ARGUMENT listing every violation; the message names each field."""
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        return cls(Code.INVALID_ARGUMENT, message, list(violations))

    def to_status(self) -> dict:
        """The google.rpc.Status JSON of the error, as used inside an Operation."""
        details = []
        if self.violations:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": v.field, "description": v.description} for v in self.violations],
                }
            )
        return {"code": int(self.code), "message": self.message, "details": details}


def os_error(error: OSError, doing: str) -> ExportError:
    """An OSError met while `doing` something, as the google.rpc code a user can act on."""
    where = f" {error.filename!r}" if error.filename else ""
    text = f"{doing}: {error.strerror or error}{where}"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExportError(Code.RESOURCE_EXHAUSTED, text)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ExportError(Code.PERMISSION_DENIED, text)
    if error.errno == errno.ENOENT:
        return ExportError(Code.NOT_FOUND, text)
    if error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return ExportError(Code.FAILED_PRECONDITION, text)
    return ExportError(Code.INTERNAL, text)
