"""modelFormat ``docker``: a TF Serving image with the serving SavedModel baked in.

Builds on ``tf_saved_model``: the same serving SavedModel (verified the same way) goes to
``/models/default/1`` of a ``tensorflow/serving`` image (``-gpu`` for ``gpu_architecture=nvidia``;
the base references are settings), with ``MODEL_NAME=default`` and ports 8500 and 8501. The
build context (the model, ``dict.txt``, a ``Dockerfile`` and the recipe) is staged by the export
and pushed to ``outputUri`` when the export publishes.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from containers.push import RECIPE_FILE
from containers.recipe import recipe_for
from converters.base import Converter, register
from converters.tf_saved_model import build_serving_model, serving_checks
from exporter.destinations import rfc3339_millis, utc_now
from exporter.report import engine_version


@register("docker")
class DockerImageConverter(Converter):
    libraries = ("tensorflow",)

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        build_serving_model(source, workdir / "model")
        (workdir / "dict.txt").write_text("\n".join(source.labels) + "\n", encoding="utf-8")
        recipe = recipe_for(source, params, rfc3339_millis(utc_now()), engine_version())
        (workdir / "Dockerfile").write_text(recipe.dockerfile())
        (workdir / RECIPE_FILE).write_text(json.dumps(dataclasses.asdict(recipe), indent=2) + "\n")
        return sorted(workdir.iterdir())

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        return serving_checks(workdir / "model", reference)
