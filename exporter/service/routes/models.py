"""``models``: list, import (an extension), get, and ``:export``, which queues an operation."""

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from exporter.core.errors import Code, ExportError
from exporter.core.formats import DestinationKind
from exporter.core.request import ExportModelRequest, parse_export_body
from exporter.service.deps import CurrentPrincipal, SettingsDep, StoreDep, model_name, parent_name, require
from exporter.service.http import json_body, next_token, page
from exporter.service.models import import_model, parse_import
from exporter.service.outputs import check_destination, project_of
from exporter.service.resources import model_json, operation_json
from exporter.service.store import Limits, ModelRow, Store

# The principal name recorded for exports when auth is off (one shared limit).
ANONYMOUS_SENTINEL = "anonymous"

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models(
    parent: Annotated[str, require("automl.models.list", parent_name)], store: StoreDep, request: Request
):
    offset, size = page(request.query_params, "models")
    rows = await run_in_threadpool(store.list_models, parent, offset, size)
    body: dict = {"model": [model_json(r) for r in rows]}
    if token := next_token("models", offset, size, len(rows)):
        body["nextPageToken"] = token
    return body


@router.post("/models:import")
async def import_(
    parent: Annotated[str, require("automl.models.create", parent_name)],
    store: StoreDep,
    settings: SettingsDep,
    request: Request,
):
    body = parse_import(await json_body(request, settings))
    row = await run_in_threadpool(import_model, store, settings, parent, body)
    return model_json(row)


@router.get("/models/{model_id}")
async def get_model(name: Annotated[str, require("automl.models.get", model_name)], store: StoreDep):
    return model_json(await run_in_threadpool(find_model, store, name))


@router.post("/models/{model_id:segment}:export")
async def export(
    name: Annotated[str, require("automl.models.export", model_name)],
    principal: CurrentPrincipal,
    store: StoreDep,
    settings: SettingsDep,
    request: Request,
):
    row = await run_in_threadpool(find_model, store, name)
    body = await json_body(request, settings)
    export = parse_export_body(body)
    if export.row.destination is DestinationKind.GCS:
        check_destination(export.destination, settings, project_of(name))  # again when a worker starts it
    if row.model_type not in export.row.exportable_model_types:
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"model {row.name} is of type {row.model_type!r}, which cannot be exported to {export.model_format!r}",
        )
    # The fields the caller gave, as checked above; the worker checks them again when it runs.
    config = ExportModelRequest.model_validate(body).output_config.model_dump(by_alias=True, exclude_unset=True)
    who = principal.name if principal else ANONYMOUS_SENTINEL
    # The limits are checked in the transaction that creates the operation (no race between them).
    limits = Limits(per_principal=settings.max_active_exports_per_principal, queue=settings.max_queue)
    operation = await run_in_threadpool(
        partial(store.create_operation, destination=export.destination, limits=limits),
        row.parent,
        row.name,
        config,
        who,
    )
    await run_in_threadpool(request.app.state.runner.submit, operation)
    return operation_json(operation)


@router.post("/models/{model_verb}")
async def unknown_method(model_verb: str, _: CurrentPrincipal):
    """A POST to a model without ``:export``: authenticated, then NOT_FOUND."""
    raise ExportError(Code.NOT_FOUND, f"no such method: models/{model_verb}")


def find_model(store: Store, name: str) -> ModelRow:
    row = store.get_model(name)
    if row is None:
        raise ExportError(Code.NOT_FOUND, f"model {name} not found")
    return row
