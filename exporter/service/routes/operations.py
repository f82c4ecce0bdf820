"""``operations``: list, get, delete, ``:cancel``, ``:wait`` and ``:exportReport`` (an extension).

Each ``:verb`` has its own route. A name with a verb no route has (``id:foo``, ``a:b:cancel``)
reaches the route of the plain name, which checks the operation it names as before and answers
NOT_FOUND for the method.
"""

import asyncio
import re
import time
from typing import Annotated

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from exporter.core.errors import Code, ExportError, FieldViolation
from exporter.service.deps import (
    SettingsDep,
    StoreDep,
    operation_name,
    operation_name_before_verb,
    parent_name,
    require,
)
from exporter.service.http import json_body, next_token, page, parse_duration
from exporter.service.resources import operation_json
from exporter.service.store import OperationRow, State, Store

DONE_FILTER = re.compile(r"^\s*done\s*=\s*(true|false)\s*$")

router = APIRouter(tags=["operations"])


@router.get("/operations")
async def list_operations(
    parent: Annotated[str, require("automl.operations.list", parent_name)], store: StoreDep, request: Request
):
    done = None
    if text := request.query_params.get("filter"):
        match = DONE_FILTER.match(text)
        if not match:
            raise ExportError.invalid([FieldViolation("filter", "supported: done=true or done=false")])
        done = match.group(1) == "true"
    offset, size = page(request.query_params, "operations")
    rows = await run_in_threadpool(store.list_operations, parent, done, offset, size)
    body: dict = {"operations": [operation_json(r) for r in rows]}
    if token := next_token("operations", offset, size, len(rows)):
        body["nextPageToken"] = token
    return body


@router.get("/operations/{operation_id:segment}:exportReport")
async def export_report(name: Annotated[str, require("automl.operations.get", operation_name)], store: StoreDep):
    """The export's report: a succeeded export's, or a failed attempt's (``"state": "FAILED"``: the
    error, the check that missed with its numbers, the params that would pass, the convert step's
    reports); an operation that failed before staging, or is not done, has none."""
    row = await run_in_threadpool(find_operation, store, name)
    if row.report is None:
        raise ExportError(Code.FAILED_PRECONDITION, f"operation {row.name} has no export report (state {row.state})")
    return row.report


@router.get("/operations/{operation_id}")
async def get_operation(
    name: Annotated[str, require("automl.operations.get", operation_name_before_verb)],
    operation_id: str,
    store: StoreDep,
):
    row = await run_in_threadpool(find_operation, store, name)
    if ":" in operation_id:
        raise ExportError(Code.NOT_FOUND, f"no such method: operations/{operation_id}")
    return operation_json(row)


@router.delete("/operations/{operation_id}")
async def delete_operation(name: Annotated[str, require("automl.operations.delete", operation_name)], store: StoreDep):
    if not await run_in_threadpool(store.delete_operation, name):
        raise ExportError(Code.NOT_FOUND, f"operation {name} not found")
    return {}


@router.post("/operations/{operation_id:segment}:cancel")
async def cancel_operation(name: Annotated[str, require("automl.operations.cancel", operation_name)], store: StoreDep):
    if await run_in_threadpool(store.request_cancel, name) is None:
        raise ExportError(Code.NOT_FOUND, f"operation {name} not found")
    return {}


@router.post("/operations/{operation_id:segment}:wait")
async def wait_operation(
    name: Annotated[str, require("automl.operations.get", operation_name)],
    store: StoreDep,
    settings: SettingsDep,
    request: Request,
):
    body = await json_body(request, settings, required=False)
    timeout = parse_duration(body.get("timeout", "60s") if isinstance(body, dict) else None)
    deadline = time.monotonic() + timeout
    while True:
        row = await run_in_threadpool(find_operation, store, name)
        if State(row.state).done or time.monotonic() >= deadline:
            return operation_json(row)
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


@router.post("/operations/{operation_id}")
async def unknown_method(
    name: Annotated[str, require("automl.operations.get", operation_name_before_verb)], operation_id: str
):
    """A POST to an operation without ``:cancel`` or ``:wait``: checked as a get, then NOT_FOUND."""
    raise ExportError(Code.NOT_FOUND, f"no such method: operations/{operation_id}")


def find_operation(store: Store, name: str) -> OperationRow:
    row = store.get_operation(name)
    if row is None:
        raise ExportError(Code.NOT_FOUND, f"operation {name} not found")
    return row
