"""The interface of the two image builders, and the choice between them.

``engine`` (a Docker engine builds and pushes), ``daemonless`` (the registry's HTTP API only), or
``auto``: the engine when one is reachable, else daemonless.
"""

from __future__ import annotations

import abc
from pathlib import Path

from containers.recipe import Recipe
from containers.registry import ImageRef
from exporter.core.errors import Code, ExportError


class ImageBuilder(abc.ABC):
    """Builds the serving image from a build context and a recipe, and pushes it."""

    name: str

    @abc.abstractmethod
    def push(self, context: Path, recipe: Recipe, target: ImageRef) -> dict:
        """Build and push; returns the push's facts (``digest`` always) for the report."""


def choose_builder(choice: str) -> ImageBuilder:
    """The builder that `choice` (the ``builder`` param: auto, engine, daemonless) names."""
    from containers.daemonless import DaemonlessBuilder
    from containers.engine import EngineBuilder

    if choice == "daemonless":
        return DaemonlessBuilder()
    engine = EngineBuilder.reachable()
    if engine is not None:
        return engine
    if choice == "engine":
        raise ExportError(
            Code.FAILED_PRECONDITION,
            "builder=engine but no Docker engine is reachable (DOCKER_HOST or the default socket)",
        )
    return DaemonlessBuilder()
