"""The HTTP details the routes share: JSON bodies, list paging, durations, google.rpc error bodies.

Also the ``segment`` path convertor: the part of a path segment before a literal ``:verb``
(``/operations/{operation_id:segment}:cancel``). It takes no ``:``, so a name such as
``a:b:cancel`` is not read as operation ``a:b``; it falls through to the route of the plain
name, which answers NOT_FOUND for a method it does not have. It may be empty: the resource-name
check then refuses the name with its usual message.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.convertors import Convertor, register_url_convertor

from exporter.core.errors import Code, ExportError, FieldViolation
from exporter.service.resources import status_body
from exporter.service.settings import ServiceSettings

MAX_PAGE = 1000
DEFAULT_PAGE = 50


class SegmentConvertor(Convertor[str]):
    regex = "[^/:]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", SegmentConvertor())


def error_response(error: ExportError) -> JSONResponse:
    headers = {"Connection": "close"} if isinstance(error, BodyTooLarge) else None
    return JSONResponse(status_code=error.code.http_status, content=status_body(error), headers=headers)


# Content types a JSON body may come with: JSON, none, and what ``curl -d`` sends by default
# (application/x-www-form-urlencoded); the body must parse as JSON whichever it is.
JSON_CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded", "")


# How much of an oversized body is read and dropped before the 400 is sent. A client that writes its
# whole body before it reads (Python's urllib, most simple clients) would otherwise meet a closed
# connection (a reset) instead of the error; past this bound the server stops reading anyway.
DISCARD_BOUND = 64 << 20


class BodyTooLarge(ExportError):
    """A body over the limit: answered with ``Connection: close``, since its rest is not read."""

    def __init__(self, limit: int):
        super().__init__(Code.INVALID_ARGUMENT, f"request body larger than {limit} bytes (EXPORTER_MAX_BODY_BYTES)")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, read chunk by chunk and refused as soon as it passes `limit` bytes.

    At most `limit` bytes (plus one chunk) are ever held, whatever the client sends. The rest of
    an oversized body, up to DISCARD_BOUND, is read and dropped before the error is answered, so
    that the client, still sending, gets the 400 rather than a reset connection.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DISCARD_BOUND:
        raise BodyTooLarge(limit)  # too much to drain: answered at once
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DISCARD_BOUND:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise BodyTooLarge(limit)
    return b"".join(chunks)


def json_depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (a scalar: 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


async def json_body(request: Request, settings: ServiceSettings, required: bool = True) -> Any:
    """The request's JSON body, with every way it can be wrong as INVALID_ARGUMENT: too large
    (``EXPORTER_MAX_BODY_BYTES``, checked while reading), nested too deeply
    (``EXPORTER_MAX_JSON_DEPTH``), an unsupported content type, malformed JSON."""
    raw = await read_body(request, settings.max_body_bytes)
    if not raw.strip():
        if required:
            raise ExportError.invalid([FieldViolation("body", "a JSON object is required")])
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_CONTENT_TYPES:
        raise ExportError(
            Code.INVALID_ARGUMENT, f"content type {content_type!r} is not supported; send application/json"
        )
    too_deep = ExportError(
        Code.INVALID_ARGUMENT,
        f"JSON body nested deeper than {settings.max_json_depth} levels (EXPORTER_MAX_JSON_DEPTH)",
    )
    try:
        body = json.loads(raw)
    except RecursionError:  # the C parser stops at the interpreter's recursion limit
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"malformed JSON body: {error}") from None
    if json_depth(body) > settings.max_json_depth:
        raise too_deep
    return body


def page(params, what: str) -> tuple[int, int]:
    """The offset and size a list call asks for (``pageSize``, ``pageToken``)."""
    size_text = params.get("pageSize") or params.get("page_size") or str(DEFAULT_PAGE)
    if not size_text.isdigit() or not 0 <= int(size_text) <= MAX_PAGE:
        raise ExportError.invalid([FieldViolation("pageSize", f"must be an integer from 0 to {MAX_PAGE}")])
    size = int(size_text) or DEFAULT_PAGE
    token = params.get("pageToken") or params.get("page_token") or ""
    if not token:
        return 0, size
    try:
        kind, offset = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if kind != what or not offset.isdigit():
            raise ValueError
    except ValueError:
        raise ExportError.invalid([FieldViolation("pageToken", "is not a token this list gave")]) from None
    return int(offset), size


def next_token(what: str, offset: int, size: int, got: int) -> str:
    return base64.urlsafe_b64encode(f"{what}:{offset + size}".encode()).decode() if got == size else ""


def split_verb(segment: str) -> tuple[str, str | None]:
    """``"id:verb"`` -> ``("id", "verb")``; ``"id"`` -> ``("id", None)``."""
    resource, sep, verb = segment.partition(":")
    return resource, (verb if sep else None)


def parse_duration(value: Any) -> float:
    """A google.protobuf.Duration in JSON ("12.5s"), capped at 10 minutes."""
    if not isinstance(value, str) or not re.fullmatch(r"\d+(\.\d+)?s", value):
        raise ExportError.invalid([FieldViolation("timeout", 'must be a duration such as "30s"')])
    return min(float(value[:-1]), 600.0)
