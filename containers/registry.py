"""A small client of the OCI distribution HTTP API: manifests, blobs, cross-repository mounts.

Enough for the daemonless back end (what ``crane append`` does): read a base image, mount or copy
its blobs, upload a layer and a config, write a manifest. Auth follows the registry's
``WWW-Authenticate`` answer: Basic with the credentials, or the Bearer token flow (a token from
the realm for the scope asked). Transient failures (connection errors, 429, 5xx) are retried
with backoff. Registries on loopback, or named in ``EXPORTER_INSECURE_REGISTRIES``, use http.
Image references are normalized as the Docker CLI does (``busybox`` is
``docker.io/library/busybox:latest``), and Docker Hub's API is served from ``registry-1.docker.io``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field

import httpx

from exporter.core.errors import Code, ExportError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
RETRIES = 4


# Docker Hub, as the Docker CLI names it and where its registry API is served
# (distribution/reference's normalize.go: defaultDomain, legacyDefaultDomain, officialRepoPrefix).
DOCKER_HUB = "docker.io"
DOCKER_HUB_LEGACY = "index.docker.io"  # the only other name that normalizes to docker.io
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DOCKER_HUB_ALIASES = (DOCKER_HUB, DOCKER_HUB_LEGACY, DOCKER_HUB_ENDPOINT)  # hosts that are Docker Hub
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"  # where `docker login` keeps its credentials
NAME_TOTAL_LENGTH_MAX = 255  # reference.NameTotalLengthMax, of the normalized name
CONNECT_TIMEOUT = 10  # seconds; a network that drops packets fails each try in this, not the 60 s read timeout

# The OCI distribution grammar (distribution/reference's regexp.go). ASCII only, and matched with
# fullmatch: Python's ``\w`` is Unicode and its ``$`` lets a trailing newline through.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")  # an image id, refused as a name (anchoredIdentifierRegexp)
_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")


@dataclass(frozen=True)
class ImageRef:
    """An image reference normalized as the Docker CLI does (``reference.ParseNormalizedNamed``)."""

    registry: str
    repository: str
    tag: str = "latest"
    digest: str | None = None
    # Whether the text named the tag: docker prints ``name@digest`` for a digest alone, and then the
    # implied ``latest`` is only what `tag` answers for callers that need a tag.
    tag_given: bool = field(default=True, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """``[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]``, normalized as splitDockerDomain does."""

        def invalid(why: str) -> ExportError:
            return ExportError(Code.INVALID_ARGUMENT, f"invalid image reference {text!r}: {why}")

        if _IDENTIFIER.fullmatch(text):
            raise invalid("a 64-character hexadecimal string is an image id, not a repository name")
        name, at, digest = text.partition("@")
        if at and not _DIGEST.fullmatch(digest):
            raise invalid("a digest must be sha256: and 64 lowercase hexadecimal digits")
        tag = None
        if ":" in name.rsplit("/", 1)[-1]:  # a colon before the last slash is a host's port
            name, tag = name.rsplit(":", 1)
            if not _TAG.fullmatch(tag):
                raise invalid(f"the tag {tag!r} must be 1 to 128 of letters, digits, _ . - and not start with . or -")
        # The first part names a registry only when it has a '.' or a ':', is 'localhost', or has an
        # upper-case letter (repository paths are lowercase, so 'LOCALHOST/x' is a host too).
        first, slash, rest = name.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
            if not _HOST.fullmatch(first):
                raise invalid(f"{first!r} is not a registry host")
            registry, repository = first, rest
        else:
            registry, repository = DOCKER_HUB, name
        if registry == DOCKER_HUB_LEGACY:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"  # an official image
        if not _REPOSITORY.fullmatch(repository):
            raise invalid(
                f"the repository {repository!r} must be lowercase letters and digits in parts separated by "
                "/ (and within a part by . _ __ or dashes), none empty"
            )
        if len(registry) + 1 + len(repository) > NAME_TOTAL_LENGTH_MAX:
            raise invalid(f"the name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
        return cls(registry, repository, tag or "latest", digest or None, tag_given=tag is not None or not digest)

    @property
    def reference(self) -> str:
        """What to pull by: the digest when there is one (it wins over a tag), else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag_given or not self.digest else ""
        return f"{self.registry}/{self.repository}{tag}" + (f"@{self.digest}" if self.digest else "")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_docker_hub(registry: str) -> bool:
    return registry in DOCKER_HUB_ALIASES


def endpoint(registry: str) -> str:
    """The host that serves a registry's HTTP API (Docker Hub's is not docker.io itself)."""
    return DOCKER_HUB_ENDPOINT if is_docker_hub(registry) else registry


def _scheme(registry: str) -> str:
    host = re.sub(r":[0-9]+$", "", registry).strip("[]")  # 'localhost:5000', '[::1]:5000'
    insecure = {r.strip() for r in os.environ.get("EXPORTER_INSECURE_REGISTRIES", "").split(",") if r.strip()}
    return "http" if host in ("127.0.0.1", "localhost", "::1") or registry in insecure else "https"


def docker_config_credentials(registry: str) -> tuple[str, str] | None:
    """Credentials for `registry` from the usual docker config (``auths`` with base64 ``auth``)."""

    path = os.path.join(os.environ.get("DOCKER_CONFIG", os.path.expanduser("~/.docker")), "config.json")
    try:
        with open(path) as handle:
            auths = json.load(handle).get("auths", {})
    except (OSError, ValueError):
        return None
    names = [registry, f"https://{registry}", f"http://{registry}"]
    if is_docker_hub(registry):  # `docker login` writes Docker Hub's under its v1 index address
        names = [DOCKER_HUB_CONFIG_KEY, *DOCKER_HUB_ALIASES, *(f"https://{a}" for a in DOCKER_HUB_ALIASES)]
    entry = next((auths[name] for name in names if name in auths), None)
    if not entry or "auth" not in entry:
        return None
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return user, password


def unreachable(registry: str, error: Exception) -> ExportError:
    if is_docker_hub(registry):
        return ExportError(
            Code.UNAVAILABLE,
            (
                f"Docker Hub ({DOCKER_HUB_ENDPOINT}) is unreachable: {error}. The serving base images default to "
                f"Docker Hub; to take them from elsewhere, point EXPORTER_SERVING_BASE_CPU / "
                f"EXPORTER_SERVING_BASE_GPU at a mirror or a registry of your own"
            ),
        )
    return ExportError(Code.UNAVAILABLE, f"registry {registry} unreachable: {error}")


class RegistryClient:
    def __init__(self, registry: str, credentials: tuple[str, str] | None = None, retries: int = RETRIES):
        self.registry = registry
        self.base = f"{_scheme(registry)}://{endpoint(registry)}"
        self.credentials = credentials if credentials is not None else docker_config_credentials(registry)
        self.retries = max(1, retries)  # tries of each request, transient failures included
        self.http = httpx.Client(timeout=httpx.Timeout(60, connect=CONNECT_TIMEOUT), follow_redirects=True)
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
                raise ExportError(
                    Code.PERMISSION_DENIED, f"the token service of {self.registry} refused: HTTP {answer.status_code}"
                )
            body = answer.json()
            return "Bearer " + (body.get("token") or body.get("access_token", ""))
        return None

    def request(self, method: str, path: str, scope: str, **kwargs) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.base}{path}"
        headers = dict(kwargs.pop("headers", {}))
        attempt = 0  # failed tries so far; answering a 401 with credentials is not one
        while True:
            if scope in self.tokens:
                headers["Authorization"] = self.tokens[scope]
            try:
                response = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as error:
                attempt += 1
                if attempt >= self.retries:
                    raise unreachable(self.registry, error) from None
                time.sleep(0.5 * 2 ** (attempt - 1))
                continue
            if response.status_code == 401 and scope not in self.tokens:  # once per scope
                authorization = self._authorize(response.headers.get("www-authenticate", ""), scope)
                if authorization:
                    self.tokens[scope] = authorization
                    continue
            if response.status_code in (429, 502, 503, 504) and attempt + 1 < self.retries:
                attempt += 1
                time.sleep(0.5 * 2 ** (attempt - 1))
                continue
            return response

    def _check(self, response: httpx.Response, doing: str) -> httpx.Response:
        if response.status_code < 400:
            return response
        code = {401: Code.PERMISSION_DENIED, 403: Code.PERMISSION_DENIED, 404: Code.NOT_FOUND}.get(
            response.status_code, Code.UNAVAILABLE if response.status_code >= 500 else Code.FAILED_PRECONDITION
        )
        raise ExportError(code, f"{doing} on {self.registry}: HTTP {response.status_code} {response.text[:200]}")

    # Reading ------------------------------------------------------------------------------
    def manifest(
        self, repository: str, reference: str, os: str = "linux", architecture: str = "amd64"
    ) -> tuple[dict, str]:
        """The image manifest (the platform's, chosen from an index) and its media type."""
        scope = f"repository:{repository}:pull"
        response = self._check(
            self.request(
                "GET", f"/v2/{repository}/manifests/{reference}", scope, headers={"Accept": ", ".join(MANIFEST_TYPES)}
            ),
            f"reading the manifest of {repository}:{reference}",
        )
        manifest = response.json()
        media_type = manifest.get("mediaType") or response.headers.get("content-type", "").split(";")[0]
        if media_type in INDEX_TYPES:
            chosen = next(
                (
                    m
                    for m in manifest["manifests"]
                    if m.get("platform", {}).get("os") == os
                    and m.get("platform", {}).get("architecture") == architecture
                ),
                None,
            )
            if chosen is None:
                raise ExportError(
                    Code.FAILED_PRECONDITION, f"{repository}:{reference} has no {os}/{architecture} image"
                )
            return self.manifest(repository, chosen["digest"], os, architecture)
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
        response = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", scope, params={"mount": digest, "from": source_repository}
        )
        if response.status_code == 201:
            return True
        self._check(response, f"mounting {digest[:19]} into {repository}")
        return False

    def upload(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        if self.has_blob(repository, digest):
            return digest
        scope = f"repository:{repository}:pull,push"
        start = self._check(
            self.request("POST", f"/v2/{repository}/blobs/uploads/", scope), f"starting an upload to {repository}"
        )
        location = start.headers["location"]
        if not location.startswith("http"):
            location = f"{self.base}{location}"
        separator = "&" if "?" in location else "?"
        self._check(
            self.request(
                "PUT",
                f"{location}{separator}digest={digest}",
                scope,
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            f"uploading {digest[:19]} to {repository}",
        )
        self.uploaded_bytes += len(data)
        return digest

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        scope = f"repository:{repository}:pull,push"
        response = self._check(
            self.request(
                "PUT",
                f"/v2/{repository}/manifests/{tag}",
                scope,
                content=manifest,
                headers={"Content-Type": media_type},
            ),
            f"writing the manifest {repository}:{tag}",
        )
        return response.headers.get("docker-content-digest") or digest_of(manifest)
