"""Bearer tokens mapped to principals and their permissions on resource names.

The settings file (``EXPORTER_AUTH_FILE``) is JSON::

    {"principals": {
        "ci-bot": {"token_sha256": ["<hex sha256 of the bearer token>"],
                   "grants": [{"permissions": ["automl.models.export", "automl.operations.get"],
                               "resources": ["projects/my-project/*"]}]}}}

A grant's resources are shell-style patterns over resource names (``*`` matches across ``/``).
Without a file every call is allowed, and ``exporter serve`` then refuses to listen beyond
loopback. Only the tokens' SHA-256 digests are stored.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.core.errors import Code, ExportError

PERMISSIONS = (
    "automl.models.export",
    "automl.models.get",
    "automl.models.list",
    "automl.models.create",
    "automl.operations.get",
    "automl.operations.list",
    "automl.operations.cancel",
    "automl.operations.delete",
)


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    permissions: list[str]
    resources: list[str]


class PrincipalEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_sha256: list[str] = Field(min_length=1)
    grants: list[Grant] = Field(default_factory=list)


class AuthFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principals: dict[str, PrincipalEntry]


@dataclass(frozen=True)
class Principal:
    name: str
    grants: tuple[Grant, ...]

    def may(self, permission: str, resource: str) -> bool:
        return any(
            permission in g.permissions and any(fnmatch.fnmatchcase(resource, r) for r in g.resources)
            for g in self.grants
        )


class Authorizer:
    def __init__(self, path: Path | None):
        self.enabled = path is not None
        self.by_digest: dict[str, Principal] = {}
        if path is None:
            return
        try:
            parsed = AuthFile.model_validate(json.loads(Path(path).read_text()))
        except (OSError, ValueError, ValidationError) as error:
            raise SystemExit(f"exporter: the auth file {path} is not usable: {error}") from None
        for name, entry in parsed.principals.items():
            unknown = {p for g in entry.grants for p in g.permissions} - set(PERMISSIONS)
            if unknown:
                raise SystemExit(f"exporter: the auth file grants unknown permissions to {name}: {sorted(unknown)}")
            for digest in entry.token_sha256:
                self.by_digest[digest.lower()] = Principal(name, tuple(entry.grants))

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller, from an ``Authorization: Bearer`` header; None when auth is off."""
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ExportError(Code.UNAUTHENTICATED, "the request has no bearer token (Authorization: Bearer TOKEN)")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        for known, principal in self.by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise ExportError(Code.UNAUTHENTICATED, "the bearer token is not valid")

    def authorize(self, principal: Principal | None, permission: str, resource: str) -> None:
        if principal is not None and not principal.may(permission, resource):
            raise ExportError(
                Code.PERMISSION_DENIED,
                f"permission '{permission}' denied on resource '{resource}' for {principal.name}",
            )
