"""The routes' dependencies: settings, store, the caller, and the permission check.

A route states the permission it needs and on which resource name, and receives that name::

    @router.get("/models/{model_id}")
    async def get_model(name: Annotated[str, require("automl.models.get", model_name)], store: StoreDep): ...

``require`` authenticates the caller (UNAUTHENTICATED), then builds and checks the resource name
from the path (INVALID_ARGUMENT), then checks the permission on it (PERMISSION_DENIED), in that
order. Every dependency here is cheap and async, so it runs on the event loop, not in a thread.
"""

# No ``from __future__ import annotations`` in this module or the routes: FastAPI reads the
# annotations at run time, and as strings it cannot resolve ``Depends(resource)`` inside
# ``require`` (the name would become a query parameter).
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from exporter.service.auth import Authorizer, Principal
from exporter.service.http import split_verb
from exporter.service.resources import check_segments
from exporter.service.resources import parent_name as _parent_name
from exporter.service.settings import ServiceSettings
from exporter.service.store import Store


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_authorizer(request: Request) -> Authorizer:
    return request.app.state.authorizer


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
AuthorizerDep = Annotated[Authorizer, Depends(get_authorizer)]


async def current_principal(request: Request, authorizer: AuthorizerDep) -> Principal | None:
    """The authenticated caller (None when auth is off); UNAUTHENTICATED without a valid token."""
    return authorizer.authenticate(request.headers.get("authorization"))


CurrentPrincipal = Annotated[Principal | None, Depends(current_principal)]


# Resource names, from the path; each checks its segments (INVALID_ARGUMENT).
async def parent_name(project: str, location: str) -> str:
    return _parent_name(project, location)


async def model_name(project: str, location: str, model_id: str) -> str:
    check_segments(project=project, location=location, model=model_id)
    return f"projects/{project}/locations/{location}/models/{model_id}"


async def operation_name(project: str, location: str, operation_id: str) -> str:
    check_segments(project=project, location=location, operation=operation_id)
    return f"projects/{project}/locations/{location}/operations/{operation_id}"


async def operation_name_before_verb(project: str, location: str, operation_id: str) -> str:
    """The operation a last segment names when it may carry a ``:verb`` (``id:verb`` names ``id``)."""
    return await operation_name(project, location, split_verb(operation_id)[0])


def require(permission: str, resource: Callable[..., Awaitable[str]]) -> Any:
    """A dependency giving the resource name `resource` makes, once the caller may `permission` on it."""

    async def authorized(
        principal: CurrentPrincipal, authorizer: AuthorizerDep, name: Annotated[str, Depends(resource)]
    ) -> str:
        authorizer.authorize(principal, permission, name)
        return name

    return Depends(authorized)
