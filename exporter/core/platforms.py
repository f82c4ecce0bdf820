"""The serving platforms of a ``docker`` export: one row per (cpu_architecture, gpu_architecture).

A row names the OCI platform the image is built for and the base image it starts from (a
setting, for mirrors and air-gapped registries, with TF Serving's Docker Hub image as default).
The docker format's params take their allowed values from these rows, and both image builders
read them, so a new platform is one row here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServingPlatform:
    cpu_architecture: str  # outputConfig.params.cpu_architecture
    gpu_architecture: str  # outputConfig.params.gpu_architecture
    os: str  # the OCI platform: os/architecture
    architecture: str
    base_setting: str  # the environment variable that overrides the base image
    base_default: str  # a Docker Hub reference, normalized as the Docker CLI does

    @property
    def platform(self) -> str:
        return f"{self.os}/{self.architecture}"

    @property
    def base_image(self) -> str:
        return os.environ.get(self.base_setting) or self.base_default


PLATFORMS: tuple[ServingPlatform, ...] = (
    ServingPlatform("x86_64", "none", "linux", "amd64", "EXPORTER_SERVING_BASE_CPU", "tensorflow/serving:2.19.0"),
    ServingPlatform("x86_64", "nvidia", "linux", "amd64", "EXPORTER_SERVING_BASE_GPU", "tensorflow/serving:2.19.0-gpu"),
)
BASE_SETTINGS = tuple(dict.fromkeys(row.base_setting for row in PLATFORMS))


def cpu_architectures() -> tuple[str, ...]:
    return tuple(dict.fromkeys(row.cpu_architecture for row in PLATFORMS))


def gpu_architectures() -> tuple[str, ...]:
    return tuple(dict.fromkeys(row.gpu_architecture for row in PLATFORMS))


def serving_platform(cpu_architecture: str, gpu_architecture: str) -> ServingPlatform | None:
    """The row for the pair, or None when the pair is not built (each value may be known alone)."""
    return next(
        (
            row
            for row in PLATFORMS
            if (row.cpu_architecture, row.gpu_architecture) == (cpu_architecture, gpu_architecture)
        ),
        None,
    )


def platform_combinations(params: dict[str, str]) -> list[tuple[str, str]]:
    """The docker row's joint check: the two architectures must name one platform row."""
    cpu, gpu = params["cpu_architecture"], params["gpu_architecture"]
    if serving_platform(cpu, gpu) is None:
        pairs = ", ".join(f"{r.cpu_architecture}+{r.gpu_architecture}" for r in PLATFORMS)
        return [
            ("gpu_architecture", f"gpu_architecture {gpu!r} is not built for cpu_architecture {cpu!r}; built: {pairs}")
        ]
    return []
