"""The REST service: AutoML v1beta1's models and operations paths, as the official client calls them.

Run it with ``exporter serve``. Paths (all under /v1beta1/projects/{project}/locations/{location}):
``models`` (list), ``models:import`` (extension), ``models/{id}`` (get), ``models/{id}:export``,
``operations`` (list), ``operations/{id}`` (get, delete), ``operations/{id}:cancel``,
``operations/{id}:wait``, ``operations/{id}:exportReport`` (extension). Every error is a
google.rpc.Status body; no input reaches a 500.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import sys
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.concurrency import run_in_threadpool

from converters.formats import Destination
from exporter.destinations import local_path
from exporter.errors import Code, ExportError, FieldViolation
from exporter.request import parse_export_body
from exporter.service.auth import Authorizer
from exporter.service.models import import_model, parse_import, under_root
from exporter.service.resources import check_segments, model_json, operation_json, parent_name, status_body
from exporter.service.settings import ServiceSettings
from exporter.service.store import State, Store

log = logging.getLogger("exporter.api")
PREFIX = "/v1beta1/projects/{project}/locations/{location}"
MAX_PAGE = 1000
DEFAULT_PAGE = 50
# The principal name recorded for exports when auth is off (one shared limit).
ANONYMOUS_SENTINEL = "anonymous"
DONE_FILTER = re.compile(r"^\s*done\s*=\s*(true|false)\s*$")


def error_response(error: ExportError) -> JSONResponse:
    return JSONResponse(status_code=error.code.http_status, content=status_body(error))


async def json_body(request: Request, settings: ServiceSettings, required: bool = True) -> Any:
    """The request's JSON body, with every way it can be wrong as INVALID_ARGUMENT."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise ExportError(Code.INVALID_ARGUMENT, f"request body larger than {settings.max_body_bytes} bytes")
    raw = await request.body()
    if len(raw) > settings.max_body_bytes:
        raise ExportError(Code.INVALID_ARGUMENT, f"request body larger than {settings.max_body_bytes} bytes")
    if not raw.strip():
        if required:
            raise ExportError.invalid([FieldViolation("body", "a JSON object is required")])
        return {}
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise ExportError(Code.INVALID_ARGUMENT, f"content type {content_type!r} is not supported; send application/json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"malformed JSON body: {error}") from None


def page(params, what: str) -> tuple[int, int]:
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
    resource, sep, verb = segment.partition(":")
    return resource, (verb if sep else None)


def create_app(settings: ServiceSettings | None = None, start_workers: bool = True) -> FastAPI:
    settings = settings or ServiceSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.store_url)
    authorizer = Authorizer(settings.auth_file)

    def caller(request: Request):
        """The authenticated principal (None when auth is off); 401 without a valid token."""
        return authorizer.authenticate(request.headers.get("authorization"))

    def allow(principal, permission: str, resource: str) -> None:
        authorizer.authorize(principal, permission, resource)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = None
        if start_workers and settings.workers > 0:
            from exporter.service.pool import WorkerPool

            pool = WorkerPool(settings, store)
            pool.start()
        app.state.pool = pool
        try:
            yield
        finally:
            if pool is not None:
                pool.stop()

    app = FastAPI(title="automl-export-engine", version="v1beta1", lifespan=lifespan)
    app.state.store, app.state.settings = store, settings

    @app.exception_handler(ExportError)
    async def _export_error(request: Request, error: ExportError):
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        code = {404: Code.NOT_FOUND, 405: Code.UNIMPLEMENTED}.get(error.status_code, Code.INVALID_ARGUMENT)
        text = f"no such resource or method: {request.method} {request.url.path}" if error.status_code in (404, 405) else str(error.detail)
        return error_response(ExportError(code, text))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        return error_response(ExportError(Code.INVALID_ARGUMENT, str(error.errors())))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(ExportError(Code.INTERNAL, f"internal error: {type(error).__name__}"))

    @app.get("/healthz")
    async def health():
        pool = app.state.pool
        return {
            "status": "ok",
            "workers": pool.pids() if pool else {},
            # The API process never imports TensorFlow: only the workers convert.
            "tensorflowLoaded": "tensorflow" in sys.modules,
        }

    # Models -------------------------------------------------------------------------------
    @app.get(PREFIX + "/models")
    async def list_models(project: str, location: str, request: Request):
        principal = caller(request)
        parent = parent_name(project, location)
        allow(principal, "automl.models.list", parent)
        offset, size = page(request.query_params, "models")
        rows = await run_in_threadpool(store.list_models, parent, offset, size)
        body: dict = {"model": [model_json(r) for r in rows]}
        if token := next_token("models", offset, size, len(rows)):
            body["nextPageToken"] = token
        return body

    @app.post(PREFIX + "/models:import")
    async def import_(project: str, location: str, request: Request):
        principal = caller(request)
        parent = parent_name(project, location)
        allow(principal, "automl.models.create", parent)
        body = parse_import(await json_body(request, settings))
        row = await run_in_threadpool(import_model, store, settings, parent, body)
        return model_json(row)

    @app.get(PREFIX + "/models/{model}")
    async def get_model(project: str, location: str, model: str, request: Request):
        principal = caller(request)
        check_segments(project=project, location=location, model=model)
        allow(principal, "automl.models.get", f"projects/{project}/locations/{location}/models/{model}")
        return model_json(await run_in_threadpool(find_model, project, location, model))

    @app.post(PREFIX + "/models/{model_verb}")
    async def model_verb(project: str, location: str, model_verb: str, request: Request):
        principal = caller(request)
        model, verb = split_verb(model_verb)
        if verb != "export":
            raise ExportError(Code.NOT_FOUND, f"no such method: models/{model_verb}")
        check_segments(project=project, location=location, model=model)
        allow(principal, "automl.models.export", f"projects/{project}/locations/{location}/models/{model}")
        row = await run_in_threadpool(find_model, project, location, model)
        body = await json_body(request, settings)
        export = parse_export_body(body)
        if export.row.destination is Destination.GCS:
            check_local_destination(export.destination)
        if row.model_type not in export.row.exportable_model_types:
            raise ExportError(
                Code.FAILED_PRECONDITION,
                f"model {row.name} is of type {row.model_type!r}, which cannot be exported to "
                f"{export.model_format!r}",
            )
        config = body.get("outputConfig", body.get("output_config"))
        who = principal.name if principal else ANONYMOUS_SENTINEL
        if await run_in_threadpool(store.count_unfinished, who) >= settings.max_active_exports_per_principal:
            raise ExportError(Code.RESOURCE_EXHAUSTED,
                              f"{who} already has {settings.max_active_exports_per_principal} "
                              "exports queued or running; wait for one to finish")
        if await run_in_threadpool(store.count_unfinished, None, (State.QUEUED,)) >= settings.max_queue:
            raise ExportError(Code.RESOURCE_EXHAUSTED, f"the export queue is full ({settings.max_queue} queued)")
        operation = await run_in_threadpool(store.create_operation, row.parent, row.name, config, who)
        return operation_json(operation)

    def find_model(project: str, location: str, model: str):
        check_segments(project=project, location=location, model=model)
        name = f"projects/{project}/locations/{location}/models/{model}"
        row = store.get_model(name)
        if row is None:
            raise ExportError(Code.NOT_FOUND, f"model {name} not found")
        return row

    def check_local_destination(prefix: str) -> None:
        path = local_path(prefix)
        if path is not None and not under_root(path, settings.output_roots):
            allowed = ", ".join(map(str, settings.output_roots)) or "none configured (EXPORTER_OUTPUT_ROOTS)"
            raise ExportError.invalid([FieldViolation(
                "outputConfig.gcsDestination.outputUriPrefix",
                f"{str(path)!r} is outside the folders exports may be written to: {allowed}")])

    # Operations ---------------------------------------------------------------------------
    @app.get(PREFIX + "/operations")
    async def list_operations(project: str, location: str, request: Request):
        principal = caller(request)
        parent = parent_name(project, location)
        allow(principal, "automl.operations.list", parent)
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

    def operation_name(project: str, location: str, op_id: str) -> str:
        check_segments(project=project, location=location, operation=op_id)
        return f"projects/{project}/locations/{location}/operations/{op_id}"

    def find_operation(name: str):
        row = store.get_operation(name)
        if row is None:
            raise ExportError(Code.NOT_FOUND, f"operation {name} not found")
        return row

    @app.get(PREFIX + "/operations/{op_verb}")
    async def get_operation(project: str, location: str, op_verb: str, request: Request):
        principal = caller(request)
        op_id, verb = split_verb(op_verb)
        name = operation_name(project, location, op_id)
        allow(principal, "automl.operations.get", name)
        row = await run_in_threadpool(find_operation, name)
        if verb is None:
            return operation_json(row)
        if verb == "exportReport":
            if row.report is None:
                raise ExportError(Code.FAILED_PRECONDITION, f"operation {row.name} has no export report (state {row.state})")
            return row.report
        raise ExportError(Code.NOT_FOUND, f"no such method: operations/{op_verb}")

    @app.delete(PREFIX + "/operations/{op_id}")
    async def delete_operation(project: str, location: str, op_id: str, request: Request):
        principal = caller(request)
        name = operation_name(project, location, op_id)
        allow(principal, "automl.operations.delete", name)
        if not await run_in_threadpool(store.delete_operation, name):
            raise ExportError(Code.NOT_FOUND, f"operation {name} not found")
        return {}

    @app.post(PREFIX + "/operations/{op_verb}")
    async def operation_verb(project: str, location: str, op_verb: str, request: Request):
        principal = caller(request)
        op_id, verb = split_verb(op_verb)
        name = operation_name(project, location, op_id)
        allow(principal, "automl.operations.cancel" if verb == "cancel" else "automl.operations.get", name)
        if verb == "cancel":
            if await run_in_threadpool(store.request_cancel, name) is None:
                raise ExportError(Code.NOT_FOUND, f"operation {name} not found")
            return {}
        if verb == "wait":
            body = await json_body(request, settings, required=False)
            timeout = parse_duration(body.get("timeout", "60s") if isinstance(body, dict) else None)
            deadline = time.monotonic() + timeout
            while True:
                row = await run_in_threadpool(find_operation, name)
                if State(row.state).done or time.monotonic() >= deadline:
                    return operation_json(row)
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise ExportError(Code.NOT_FOUND, f"no such method: operations/{op_verb}")

    @app.api_route("/v1beta1/{rest:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
    async def unknown(rest: str, request: Request):
        if rest.startswith("projects/"):
            raise ExportError(Code.INVALID_ARGUMENT, f"malformed resource name or method: {request.url.path}")
        raise ExportError(Code.NOT_FOUND, f"no such resource: {request.url.path}")

    return app


def parse_duration(value: Any) -> float:
    """A google.protobuf.Duration in JSON ("12.5s"), capped at 10 minutes."""
    if not isinstance(value, str) or not re.fullmatch(r"\d+(\.\d+)?s", value):
        raise ExportError.invalid([FieldViolation("timeout", "must be a duration such as \"30s\"")])
    return min(float(value[:-1]), 600.0)
