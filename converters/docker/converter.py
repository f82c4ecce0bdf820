"""modelFormat ``docker``: a TF Serving image with the serving SavedModel baked in.

Builds on ``tf_saved_model``: the same serving SavedModel, made and verified by that format's
converter, is staged as ``model/`` with ``dict.txt``; the registry destination turns the two into
the image (``/models/default/1`` of a ``tensorflow/serving`` base for the platform the params
name, ``MODEL_NAME=default``, ports 8500 and 8501) and pushes it to ``outputUri``.
"""

from __future__ import annotations

from pathlib import Path

from converters.base import Converter, register
from exporter.core.labels import write_labels

MODEL_FOLDER = "model"


@register("docker")
class DockerImageConverter(Converter):
    libraries = ("tensorflow",)

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        (workdir / MODEL_FOLDER).mkdir()
        self.foundation.convert(source, workdir / MODEL_FOLDER, {})
        write_labels(workdir, source.labels)
        return sorted(workdir.iterdir())

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        return self.foundation.verify(source, workdir / MODEL_FOLDER, {}, reference)
