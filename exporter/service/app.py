"""The REST service: AutoML v1beta1's models and operations paths, as the official client calls them.

Run it with ``exporter serve``. Paths (all under /v1beta1/projects/{project}/locations/{location}):
``models`` (list), ``models:import`` (extension), ``models/{id}`` (get), ``models/{id}:export``,
``operations`` (list), ``operations/{id}`` (get, delete), ``operations/{id}:cancel``,
``operations/{id}:wait``, ``operations/{id}:exportReport`` (extension). Every error is a
google.rpc.Status body; no input reaches a 500.

This module only wires the app: the store, the authorizer, the error handlers, the worker pool's
lifespan and the routers of ``exporter.service.routes`` (their dependencies: ``deps``).
"""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from exporter.core.errors import Code, ExportError
from exporter.service.auth import Authorizer
from exporter.service.http import error_response
from exporter.service.routes import PREFIX, models, operations
from exporter.service.settings import ServiceSettings
from exporter.service.store import Store

log = logging.getLogger("exporter.api")


async def _export_error(request: Request, error: ExportError):
    return error_response(error)


async def _http_error(request: Request, error: StarletteHTTPException):
    code = {404: Code.NOT_FOUND, 405: Code.UNIMPLEMENTED}.get(error.status_code, Code.INVALID_ARGUMENT)
    text = (
        f"no such resource or method: {request.method} {request.url.path}"
        if error.status_code in (404, 405)
        else str(error.detail)
    )
    return error_response(ExportError(code, text))


async def _validation_error(request: Request, error: RequestValidationError):
    return error_response(ExportError(Code.INVALID_ARGUMENT, str(error.errors())))


async def _unexpected(request: Request, error: Exception):
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(ExportError(Code.INTERNAL, f"internal error: {type(error).__name__}"))


def create_app(settings: ServiceSettings | None = None, start_workers: bool = True) -> FastAPI:
    settings = settings or ServiceSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.store_url)
    store.migrate()  # once, here: workers and other readers only connect
    authorizer = Authorizer(settings.auth_file)

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
    app.state.store, app.state.settings, app.state.authorizer = store, settings, authorizer

    app.add_exception_handler(ExportError, _export_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/healthz")
    async def health(request: Request):
        pool = request.app.state.pool
        return {
            "status": "ok",
            "workers": pool.pids() if pool else {},
            # The API process never imports TensorFlow: only the workers convert.
            "tensorflowLoaded": "tensorflow" in sys.modules,
        }

    app.include_router(models.router, prefix=PREFIX)
    app.include_router(operations.router, prefix=PREFIX)

    # After the routers: what no route of theirs matches, under /v1beta1.
    @app.api_route("/v1beta1/{rest:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
    async def unknown(rest: str, request: Request):
        if rest.startswith("projects/"):
            raise ExportError(Code.INVALID_ARGUMENT, f"malformed resource name or method: {request.url.path}")
        raise ExportError(Code.NOT_FOUND, f"no such resource: {request.url.path}")

    return app
