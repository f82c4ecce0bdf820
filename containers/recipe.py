"""The serving image's recipe: base image, files, env, ports and labels, from the export.

One description drives both back ends: the Dockerfile (legacy-builder syntax, for the engine
and for a user who rebuilds by hand) and the daemonless config edit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

BASE_SETTINGS = {"none": "EXPORTER_SERVING_BASE_CPU", "nvidia": "EXPORTER_SERVING_BASE_GPU"}
BASE_DEFAULTS = {"none": "tensorflow/serving:2.19.0", "nvidia": "tensorflow/serving:2.19.0-gpu"}
MODEL_DIR = "models/default/1"  # the serving SavedModel inside the image
LABELS_PATH = "models/default/dict.txt"
PORTS = ("8500/tcp", "8501/tcp")  # gRPC and REST


@dataclass(frozen=True)
class Recipe:
    base: str
    env: dict[str, str] = field(default_factory=lambda: {"MODEL_NAME": "default"})
    labels: dict[str, str] = field(default_factory=dict)

    def dockerfile(self) -> str:
        lines = [
            f"FROM {self.base}",
            f"COPY model /{MODEL_DIR}",
            f"COPY dict.txt /{LABELS_PATH}",
            *(f"ENV {k}={v}" for k, v in self.env.items()),
            "EXPOSE " + " ".join(p.split("/")[0] for p in PORTS),
            *(f'LABEL "{k}"="{v}"' for k, v in sorted(self.labels.items())),
        ]
        return "\n".join(lines) + "\n"


def base_image(params: dict[str, str]) -> str:
    """The base reference for the architecture params, from the settings (mirrors, air-gapped)."""
    gpu = params.get("gpu_architecture", "none")
    return os.environ.get(BASE_SETTINGS[gpu], BASE_DEFAULTS[gpu])


def recipe_for(source, params: dict[str, str], created: str, engine_version: str) -> Recipe:
    labels = {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": source.display_name,
        "org.opencontainers.image.version": engine_version,
        "org.opencontainers.image.vendor": "automl-export-engine",
        "com.automl-export-engine.source-model": str(source.root),
        "com.automl-export-engine.model-format": "docker",
        "com.automl-export-engine.cpu-architecture": params.get("cpu_architecture", "x86_64"),
        "com.automl-export-engine.gpu-architecture": params.get("gpu_architecture", "none"),
    }
    return Recipe(base=base_image(params), labels=labels)
