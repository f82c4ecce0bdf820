"""The engine back end: `docker build` and `docker push` through a Docker engine's API.

The build context (Dockerfile in legacy-builder syntax, the model, dict.txt) is sent from
memory; the build and push streams are read for errors, and the pushed digest comes from the
push's final status. The engine is ``DOCKER_HOST`` or the default socket; registry credentials
come from the usual docker config, as the docker CLI uses them.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from containers.image_builder import ImageBuilder
from containers.recipe import CONTEXT_FILES, Recipe
from containers.registry import ImageRef
from exporter.core.errors import Code, ExportError


def engine_client():
    """A client of a reachable Docker engine, or None."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:  # no socket, no permission, no engine: all mean no engine here
        return None


class EngineBuilder(ImageBuilder):
    name = "engine"

    def __init__(self, client):
        self.client = client

    @classmethod
    def reachable(cls) -> EngineBuilder | None:
        client = engine_client()
        return cls(client) if client is not None else None

    def push(self, context: Path, recipe: Recipe, target: ImageRef) -> dict:
        return build_and_push(self.client, context, recipe, target)


def build_context(context: Path, recipe: Recipe) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dockerfile = recipe.dockerfile().encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for name in CONTEXT_FILES:
            tar.add(str(context / name), arcname=name)
    buffer.seek(0)
    return buffer


def _stream_errors(stream, doing: str) -> list[dict]:
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if "error" in chunk or "errorDetail" in chunk:
            text = chunk.get("error") or chunk["errorDetail"].get("message", "")
            lowered = text.lower()
            if "unauthorized" in lowered or "denied" in lowered or "authentication required" in lowered:
                code = Code.PERMISSION_DENIED
            elif "not found" in lowered or "manifest unknown" in lowered:
                code = Code.NOT_FOUND
            elif "connection refused" in lowered or "no such host" in lowered or "timeout" in lowered:
                code = Code.UNAVAILABLE
            else:
                code = Code.FAILED_PRECONDITION
            raise ExportError(code, f"{doing}: {' '.join(text.split())}")
    return chunks


def build_and_push(client, context: Path, recipe: Recipe, target: ImageRef) -> dict:
    reference = str(target)
    stream = client.api.build(
        fileobj=build_context(context, recipe),
        custom_context=True,
        tag=reference,
        platform=recipe.platform,
        rm=True,
        forcerm=True,
        decode=True,
    )
    _stream_errors(stream, f"docker build of {reference}")
    repository = reference.rsplit(":", 1)[0]
    pushed = _stream_errors(
        client.api.push(repository, tag=target.tag, stream=True, decode=True), f"docker push of {reference}"
    )
    digest = next((c["aux"]["Digest"] for c in reversed(pushed) if "Digest" in c.get("aux", {})), None)
    if digest is None:
        raise ExportError(Code.INTERNAL, f"docker push of {reference} reported no digest")
    return {"backend": "engine", "image": reference, "digest": digest, "base": recipe.base}
