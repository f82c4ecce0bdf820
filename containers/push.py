"""The gcrDestination: the export's build context becomes an image pushed to outputUri.

``builder`` picks the back end: ``engine`` (a Docker engine builds and pushes), ``daemonless``
(the registry's HTTP API only), or ``auto``: the engine when one is reachable, else daemonless.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from containers import daemonless, engine
from containers.recipe import Recipe
from containers.registry import ImageRef
from exporter.errors import Code, ExportError

RECIPE_FILE = "recipe.json"


class RegistryDestination:
    """Stages the build context locally; publishing builds and pushes the image."""

    def __init__(self, uri: str, builder: str = "auto", keep_context: Path | None = None):
        self.target = ImageRef.parse(uri)
        self.uri = uri
        self.builder = builder
        self.keep_context = keep_context  # where to leave a copy of the build context
        self.details: dict = {}  # the push's facts (digest, bytes), for the report

    def stage(self, final_name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix="image-context-"))

    def publish(self, staging: Path, final_name: str) -> str:
        recipe = Recipe(**json.loads((staging / RECIPE_FILE).read_text()))
        if self.keep_context is not None:  # for a rebuild by hand: docker build DIR
            shutil.copytree(staging, self.keep_context)
        client = engine.engine_client() if self.builder in ("auto", "engine") else None
        if client is None and self.builder == "engine":
            raise ExportError(Code.FAILED_PRECONDITION,
                              "builder=engine but no Docker engine is reachable (DOCKER_HOST or the default socket)")
        if client is not None:
            self.details = engine.build_and_push(client, staging, recipe, self.target)
        else:
            self.details = daemonless.push(staging, recipe, self.target)
        return f"{self.target}@{self.details['digest']}"

    @staticmethod
    def discard(staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
