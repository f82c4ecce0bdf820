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
import re
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from exporter.core.errors import Code, ExportError
from exporter.service.auth import Authorizer
from exporter.service.http import error_response
from exporter.service.protection import describe as describe_protection
from exporter.service.resources import status_body
from exporter.service.routes import PREFIX, models, operations
from exporter.service.runners import NoRunner, job_runner
from exporter.service.settings import ServiceSettings
from exporter.service.store import Store

log = logging.getLogger("exporter.api")


async def _export_error(request: Request, error: ExportError):
    return error_response(error)


async def _http_error(request: Request, error: StarletteHTTPException):
    if error.status_code == 405:  # a wrong method on /healthz or the documents (Starlette's own)
        allowed = (error.headers or {}).get("Allow", "")
        return method_not_allowed(request.method, request.url.path, [m.strip() for m in allowed.split(",") if m])
    code = {404: Code.NOT_FOUND, 405: Code.UNIMPLEMENTED}.get(error.status_code, Code.INVALID_ARGUMENT)
    text = (
        f"no such resource or method: {request.method} {request.url.path}"
        if error.status_code in (404, 405)
        else str(error.detail)
    )
    return error_response(ExportError(code, text))


async def _validation_error(request: Request, error: RequestValidationError):
    return error_response(ExportError(Code.INVALID_ARGUMENT, str(error.errors())))


# A wrong HTTP method on a path the API has answers 405 with an ``Allow`` header. google.rpc has
# no code of its own for it: the body's ``status`` is UNIMPLEMENTED (the method is not implemented
# for this resource, as gRPC says of an unknown method) and its ``code`` the HTTP status, 405, as
# every error body here carries the HTTP status it was sent with.
def method_not_allowed(method: str, path: str, allowed: list[str]) -> JSONResponse:
    body = status_body(
        ExportError(Code.UNIMPLEMENTED, f"method {method} is not allowed on {path}; allowed: {', '.join(allowed)}")
    )
    body["error"]["code"] = 405
    return JSONResponse(status_code=405, content=body, headers={"Allow": ", ".join(allowed)})


# Routes that exist only to answer NOT_FOUND for a verb no route has: a request may reach them,
# but they are not named in ``Allow``.
FALLBACK_ROUTES = {"unknown_method"}
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


@dataclass(frozen=True)
class RouteShape:
    regex: re.Pattern
    verb: bool  # the path ends in a literal ``:verb``
    methods: frozenset[str]
    fallback: bool


def route_shapes(routers: list[APIRouter], prefix: str) -> list[RouteShape]:
    """The paths and methods of the API's routes, as included under `prefix`."""
    shapes = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                regex, path_format, _ = compile_path(prefix + route.path)
                shapes.append(
                    RouteShape(
                        regex,
                        ":" in path_format.rsplit("}", 1)[-1],
                        frozenset(route.methods),
                        route.name in FALLBACK_ROUTES,
                    )
                )
    return shapes


def allowed_methods(shapes: list[RouteShape], path: str) -> tuple[set[str], set[str]] | None:
    """The methods the API routes whose path matches `path` take, and those its fallbacks take;
    None when no API route matches. A route with a literal ``:verb`` is the most specific: when
    one matches, the plain routes (``models/{id}`` also matches ``x:export``) do not count."""
    matching = [shape for shape in shapes if shape.regex.match(path)]
    chosen = [shape for shape in matching if shape.verb] or matching
    if not chosen:
        return None
    real = {m for shape in chosen if not shape.fallback for m in shape.methods}
    fallback = {m for shape in chosen if shape.fallback for m in shape.methods}
    return real, fallback


class GuardMiddleware:
    """Before routing: 405 for a wrong method on an API path, and a token for the API documents
    when auth is on (unless ``EXPORTER_PUBLIC_DOCS``). Plain ASGI, so a request body streams on
    to the route untouched (its size is checked while the route reads it)."""

    def __init__(self, app, api: FastAPI, shapes: list[RouteShape]):
        self.app, self.api, self.shapes = app, api, shapes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            response = self.refuse(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refuse(self, scope) -> JSONResponse | None:
        path, method = scope["path"], scope["method"]
        settings, authorizer = self.api.state.settings, self.api.state.authorizer
        if path in DOCS_PATHS and authorizer.enabled and not settings.public_docs:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                authorizer.authenticate(headers.get("authorization"))
            except ExportError as error:
                return error_response(error)
        if path.startswith("/v1beta1/"):
            methods = allowed_methods(self.shapes, path)
            if methods is not None:
                real, fallback = methods
                if real and method not in real | fallback:
                    return method_not_allowed(method, path, sorted(real))
        return None


async def _store_unavailable(request: Request, error: OperationalError):
    # The store is down or locked (PostgreSQL restarting, a network cut): nothing was written,
    # the client may retry; the API itself stays up and answers again once the store is back.
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, error.orig)
    return error_response(ExportError(Code.UNAVAILABLE, "the operations store is unavailable; retry shortly"))


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
        app.state.runner = runner = job_runner(settings, store, start_workers)
        runner.start()
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(title="automl-export-engine", version="v1beta1", lifespan=lifespan)
    app.state.store, app.state.settings, app.state.authorizer = store, settings, authorizer
    app.state.runner = NoRunner()  # until the lifespan starts the configured one
    app.state.protection = describe_protection(settings)  # what each export's steps run under

    app.add_exception_handler(ExportError, _export_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _store_unavailable)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/healthz")
    async def health(request: Request):
        runner = request.app.state.runner
        return {
            "status": "ok",
            "runner": settings.runner,
            "workers": runner.pids(),
            # The API process never imports TensorFlow: only the workers convert.
            "tensorflowLoaded": "tensorflow" in sys.modules,
            "sandbox": request.app.state.protection,
        }

    app.include_router(models.router, prefix=PREFIX)
    app.include_router(operations.router, prefix=PREFIX)
    app.add_middleware(GuardMiddleware, api=app, shapes=route_shapes([models.router, operations.router], PREFIX))

    # After the routers: what no route of theirs matches, under /v1beta1.
    # Not in the OpenAPI document: it is no method of the API, only its answer to what is none.
    @app.api_route("/v1beta1/{rest:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"], include_in_schema=False)
    async def unknown(rest: str, request: Request):
        if rest.startswith("projects/"):
            raise ExportError(Code.INVALID_ARGUMENT, f"malformed resource name or method: {request.url.path}")
        raise ExportError(Code.NOT_FOUND, f"no such resource: {request.url.path}")

    return app
