"""A small client of the OCI distribution HTTP API: manifests, blobs, cross-repository mounts.

Enough for the daemonless back end (what ``crane append`` does): read a base image, mount or copy
its blobs, upload a layer and a config, write a manifest. Auth follows the registry's
``WWW-Authenticate`` answer: Basic with the credentials, or the Bearer token flow (a token from
the realm for the scope asked). Transient failures (connection errors, 429, 5xx) are retried
with backoff. Registries on loopback, or named in ``EXPORTER_INSECURE_REGISTRIES``, use http.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass

import httpx

from exporter.errors import Code, ExportError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
RETRIES = 4


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> "ImageRef":
        name, tag = text, "latest"
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = text.rsplit(":", 1)
        registry, _, repository = name.partition("/")
        if not repository or ("." not in registry and ":" not in registry and registry != "localhost"):
            raise ExportError(Code.INVALID_ARGUMENT, f"{text!r} does not name a registry host (HOST/REPOSITORY[:TAG])")
        return cls(registry, repository, tag)

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _scheme(registry: str) -> str:
    host = registry.split(":")[0]
    insecure = {r.strip() for r in os.environ.get("EXPORTER_INSECURE_REGISTRIES", "").split(",") if r.strip()}
    return "http" if host in ("127.0.0.1", "localhost", "::1") or registry in insecure else "https"


def docker_config_credentials(registry: str) -> tuple[str, str] | None:
    """Credentials for `registry` from the usual docker config (``auths`` with base64 ``auth``)."""

    path = os.path.join(os.environ.get("DOCKER_CONFIG", os.path.expanduser("~/.docker")), "config.json")
    try:
        auths = json.load(open(path)).get("auths", {})
    except (OSError, ValueError):
        return None
    entry = auths.get(registry) or auths.get(f"https://{registry}") or auths.get(f"http://{registry}")
    if not entry or "auth" not in entry:
        return None
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return user, password


class RegistryClient:
    def __init__(self, registry: str, credentials: tuple[str, str] | None = None):
        self.registry = registry
        self.base = f"{_scheme(registry)}://{registry}"
        self.credentials = credentials if credentials is not None else docker_config_credentials(registry)
        self.http = httpx.Client(timeout=60, follow_redirects=True)
        self.tokens: dict[str, str] = {}
        self.uploaded_bytes = 0

    # Transport ------------------------------------------------------------------------------
    def _authorize(self, challenge: str, scope_hint: str) -> str | None:
        if challenge.lower().startswith("basic") and self.credentials:
            return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if challenge.lower().startswith("bearer"):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            # Ask for what this step needs (pull and push, and pull of a mount's source) as well as
            # what the challenged request asked: a HEAD asks only pull.
            scopes = sorted(set(scope_hint.split()) | set(fields.get("scope", "").split()))
            params = [("service", fields.get("service", "")), *(("scope", s) for s in scopes)]
            auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
            answer = self.http.get(fields["realm"], params=params, auth=auth)
            if answer.status_code != 200:
                raise ExportError(Code.PERMISSION_DENIED,
                                  f"the token service of {self.registry} refused: HTTP {answer.status_code}")
            body = answer.json()
            return "Bearer " + (body.get("token") or body.get("access_token", ""))
        return None

    def request(self, method: str, path: str, scope: str, **kwargs) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.base}{path}"
        headers = dict(kwargs.pop("headers", {}))
        for attempt in range(RETRIES):
            if scope in self.tokens:
                headers["Authorization"] = self.tokens[scope]
            try:
                response = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as error:
                if attempt == RETRIES - 1:
                    raise ExportError(Code.UNAVAILABLE, f"registry {self.registry} unreachable: {error}") from None
                time.sleep(0.5 * 2 ** attempt)
                continue
            if response.status_code == 401 and scope not in self.tokens:
                authorization = self._authorize(response.headers.get("www-authenticate", ""), scope)
                if authorization:
                    self.tokens[scope] = authorization
                    continue
            if response.status_code in (429, 502, 503, 504) and attempt < RETRIES - 1:
                time.sleep(0.5 * 2 ** attempt)
                continue
            return response
        return response

    def _check(self, response: httpx.Response, doing: str) -> httpx.Response:
        if response.status_code < 400:
            return response
        code = {401: Code.PERMISSION_DENIED, 403: Code.PERMISSION_DENIED, 404: Code.NOT_FOUND}.get(
            response.status_code, Code.UNAVAILABLE if response.status_code >= 500 else Code.FAILED_PRECONDITION)
        raise ExportError(code, f"{doing} on {self.registry}: HTTP {response.status_code} {response.text[:200]}")

    # Reading ------------------------------------------------------------------------------
    def manifest(self, repository: str, reference: str) -> tuple[dict, str]:
        """The image manifest (linux/amd64 chosen from an index) and its media type."""
        scope = f"repository:{repository}:pull"
        response = self._check(self.request("GET", f"/v2/{repository}/manifests/{reference}", scope,
                                            headers={"Accept": ", ".join(MANIFEST_TYPES)}),
                               f"reading the manifest of {repository}:{reference}")
        manifest = response.json()
        media_type = manifest.get("mediaType") or response.headers.get("content-type", "").split(";")[0]
        if media_type in INDEX_TYPES:
            chosen = next((m for m in manifest["manifests"]
                           if m.get("platform", {}).get("os") == "linux"
                           and m.get("platform", {}).get("architecture") == "amd64"), None)
            if chosen is None:
                raise ExportError(Code.FAILED_PRECONDITION, f"{repository}:{reference} has no linux/amd64 image")
            return self.manifest(repository, chosen["digest"])
        return manifest, media_type

    def blob(self, repository: str, digest: str) -> bytes:
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", f"repository:{repository}:pull")
        return self._check(response, f"reading blob {digest[:19]} of {repository}").content

    def has_blob(self, repository: str, digest: str) -> bool:
        scope = f"repository:{repository}:pull,push"
        return self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope).status_code == 200

    # Writing ------------------------------------------------------------------------------
    def mount(self, repository: str, digest: str, source_repository: str) -> bool:
        """Cross-repository mount within this registry; False when the registry declined."""
        scope = f"repository:{repository}:pull,push repository:{source_repository}:pull"
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope,
                                params={"mount": digest, "from": source_repository})
        if response.status_code == 201:
            return True
        self._check(response, f"mounting {digest[:19]} into {repository}")
        return False

    def upload(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        if self.has_blob(repository, digest):
            return digest
        scope = f"repository:{repository}:pull,push"
        start = self._check(self.request("POST", f"/v2/{repository}/blobs/uploads/", scope),
                            f"starting an upload to {repository}")
        location = start.headers["location"]
        if not location.startswith("http"):
            location = f"{self.base}{location}"
        separator = "&" if "?" in location else "?"
        self._check(self.request("PUT", f"{location}{separator}digest={digest}", scope, content=data,
                                 headers={"Content-Type": "application/octet-stream"}),
                    f"uploading {digest[:19]} to {repository}")
        self.uploaded_bytes += len(data)
        return digest

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        scope = f"repository:{repository}:pull,push"
        response = self._check(self.request("PUT", f"/v2/{repository}/manifests/{tag}", scope, content=manifest,
                                            headers={"Content-Type": media_type}),
                               f"writing the manifest {repository}:{tag}")
        return response.headers.get("docker-content-digest") or digest_of(manifest)
