"""The gcrDestination: the export's build context becomes an image pushed to outputUri."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from containers import daemonless
from containers.recipe import Recipe
from containers.registry import ImageRef

RECIPE_FILE = "recipe.json"


class RegistryDestination:
    """Stages the build context locally; publishing builds and pushes the image."""

    def __init__(self, uri: str):
        self.target = ImageRef.parse(uri)
        self.uri = uri
        self.details: dict = {}  # the push's facts (digest, bytes), for the report

    def stage(self, final_name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix="image-context-"))

    def publish(self, staging: Path, final_name: str) -> str:
        recipe = Recipe(**json.loads((staging / RECIPE_FILE).read_text()))
        self.details = daemonless.push(staging, recipe, self.target)
        return f"{self.target}@{self.details['digest']}"

    @staticmethod
    def discard(staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
