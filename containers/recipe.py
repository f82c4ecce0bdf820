"""The serving image's recipe: base image, platform, files, env, ports and labels.

One description drives both builders: the Dockerfile (legacy-builder syntax, for the engine and
for a user who rebuilds by hand) and the daemonless config edit. A build context is a folder
holding ``model/`` (the serving SavedModel) and ``dict.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.core.platforms import ServingPlatform

MODEL_DIR = "models/default/1"  # the serving SavedModel inside the image
LABELS_PATH = "models/default/dict.txt"
PORTS = ("8500/tcp", "8501/tcp")  # gRPC and REST
CONTEXT_FILES = ("model", "dict.txt")  # what a build context holds, as the image gets it


@dataclass(frozen=True)
class Recipe:
    base: str
    platform: str  # os/architecture, as OCI image indexes name platforms
    env: dict[str, str] = field(default_factory=lambda: {"MODEL_NAME": "default"})
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_platform(cls, platform: ServingPlatform, labels: dict[str, str]) -> Recipe:
        return cls(base=platform.base_image, platform=platform.platform, labels=labels)

    @property
    def os(self) -> str:
        return self.platform.split("/")[0]

    @property
    def architecture(self) -> str:
        return self.platform.split("/")[1]

    def dockerfile(self) -> str:
        lines = [
            # The platform is given to the build, not in FROM: docker build --platform <platform> .
            f"FROM {self.base}",
            f"COPY model /{MODEL_DIR}",
            f"COPY dict.txt /{LABELS_PATH}",
            *(f"ENV {k}={v}" for k, v in self.env.items()),
            "EXPOSE " + " ".join(p.split("/")[0] for p in PORTS),
            *(f'LABEL "{k}"="{v}"' for k, v in sorted(self.labels.items())),
        ]
        return "\n".join(lines) + "\n"
