"""The gcrDestination: the staged build context becomes an image pushed to ``outputUri``.

The docker converter stages ``model/`` (the serving SavedModel) and ``dict.txt``; publishing
builds the serving image for the platform the request's architectures name (one row of the
platforms table) with the builder the ``builder`` param chooses, labels it from the export's
report, and pushes it. ``keep_context`` names a new folder that receives the build context and
its Dockerfile, for a rebuild by hand.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from containers.image_builder import choose_builder
from containers.recipe import Recipe
from containers.registry import ImageRef
from exporter.core.platforms import ServingPlatform, serving_platform
from exporter.core.request import ExportRequest
from exporter.destinations.base import Destination


def image_labels(report: dict) -> dict[str, str]:
    """OCI annotations and the engine's own labels, from the export's report."""
    model = report["model"]
    return {
        "org.opencontainers.image.created": report["createTime"],
        "org.opencontainers.image.title": model["displayName"],
        "org.opencontainers.image.version": report["engine"]["version"],
        "org.opencontainers.image.vendor": report["engine"]["name"],
        "com.automl-export-engine.model-digest": model["digest"],
        "com.automl-export-engine.model-format": report["modelFormat"],
        "com.automl-export-engine.cpu-architecture": report["params"]["cpu_architecture"],
        "com.automl-export-engine.gpu-architecture": report["params"]["gpu_architecture"],
    }


class RegistryDestination(Destination):
    """Stages the build context locally; publishing builds and pushes the image."""

    options = frozenset({"keep_context"})

    def __init__(self, uri: str, platform: ServingPlatform, builder: str = "auto", keep_context: Path | None = None):
        self.target = ImageRef.parse(uri)
        self._uri = uri
        self.platform = platform
        self.builder = builder
        self.keep_context = keep_context
        self._details: dict = {}

    @classmethod
    def from_request(cls, request: ExportRequest, keep_context: str | Path | None = None) -> RegistryDestination:
        params = request.params
        platform = serving_platform(params["cpu_architecture"], params["gpu_architecture"])
        assert platform is not None  # the request contract checked the pair against the table
        return cls(
            request.destination, platform, params["builder"], Path(keep_context) if keep_context is not None else None
        )

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def details(self) -> dict:
        return {"image": self._details} if self._details else {}

    def stage(self, final_name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix="image-context-"))

    def publish(self, staging: Path, final_name: str, report: dict) -> str:
        recipe = Recipe.for_platform(self.platform, image_labels(report))
        if self.keep_context is not None:  # for a rebuild by hand: docker build DIR
            shutil.copytree(staging, self.keep_context)
            (self.keep_context / "Dockerfile").write_text(recipe.dockerfile())
        self._details = choose_builder(self.builder).push(staging, recipe, self.target)
        return f"{self.target}@{self._details['digest']}"
