"""TF Serving's REST endpoint of a docker export, timed end to end over HTTP.

The container is the serving base image (``EXPORTER_SERVING_BASE_CPU``, TF Serving's Docker Hub
image by default) with the serving SavedModel at ``/models/default/1`` and ``MODEL_NAME=default``,
as the docker export lays it out, started through the Docker engine that ``DOCKER_HOST`` (or the
default socket) names. Without an engine or the base image the row says which is missing.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from dataclasses import dataclass

from exporter.benchmark.targets.base import Artifact, NotRunnable, RunnerFailed, Target, Workload
from exporter.core.platforms import serving_platform

READY_SECONDS = 120
DOCKER_HUB = ("registry-1.docker.io", 443)


def _docker_hub_reachable() -> bool:
    try:
        socket.create_connection(DOCKER_HUB, timeout=3).close()
        return True
    except OSError:
        return False


def _on_docker_hub(reference: str) -> bool:
    # The Docker CLI's rule: a first part with a dot, a colon or "localhost" names a registry.
    first, sep, _ = reference.partition("/")
    return not sep or not ("." in first or ":" in first or first == "localhost") or first == "docker.io"


def _base_image() -> str:
    return serving_platform("x86_64", "none").base_image


@dataclass
class TfServingRest(Target):
    def _client(self):
        import docker

        base = _base_image()
        hub = " from Docker Hub" if _on_docker_hub(base) else ""
        try:
            client = docker.from_env(timeout=10)
            client.ping()
        except Exception as error:
            reach = "" if _docker_hub_reachable() else "; Docker Hub (registry-1.docker.io) is not reachable either"
            raise NotRunnable(
                f"no Docker engine reachable (DOCKER_HOST or the default socket: {type(error).__name__}){reach}: "
                f"TF Serving's base image {base}{hub} cannot run here"
            ) from None
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound:
            try:
                client.images.pull(base)
            except docker.errors.APIError as error:
                raise NotRunnable(
                    f"the serving base image {base} is not present and cannot be pulled{hub}: {error.explanation} "
                    "(EXPORTER_SERVING_BASE_CPU points at a mirror)"
                ) from None
        return client

    def check(self) -> None:
        self._client().close()

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        import httpx

        client = self._client()
        meta = json.loads((workload.data_dir / "meta.json").read_text())
        bodies = [
            json.dumps(
                {"instances": [{"image_bytes": {"b64": base64.b64encode(path.read_bytes()).decode()}, "key": "0"}]}
            )
            for path in (workload.data_dir / "png" / f"{i}.png" for i in range(workload.images))
        ]
        started = time.perf_counter()
        container = client.containers.run(
            _base_image(),
            detach=True,
            environment={"MODEL_NAME": "default"},
            volumes={str(artifact.folder): {"bind": "/models/default/1", "mode": "ro"}},
            ports={"8501/tcp": ("127.0.0.1", None)},
        )
        try:
            container.reload()
            port = container.ports["8501/tcp"][0]["HostPort"]
            base = f"http://127.0.0.1:{port}/v1/models/default"
            with httpx.Client(timeout=30) as http:
                _wait_ready(http, base, container)
                load_ms = (time.perf_counter() - started) * 1000

                def invoke(index: int) -> list[float]:
                    answer = http.post(base + ":predict", content=bodies[index % len(bodies)])
                    answer.raise_for_status()
                    return answer.json()["predictions"][0]["scores"]

                result = _time_in_process(invoke, workload, meta)
            stats = container.stats(stream=False)["memory_stats"]
            result.update(
                runtime="tensorflow-serving-rest",
                runtimeVersion=_base_image(),
                loadInitMs=load_ms,
                peakMemoryBytes=stats.get("max_usage") or stats.get("usage"),
            )
            return result
        finally:
            container.remove(force=True)
            client.close()


def _wait_ready(http, base: str, container) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        try:
            states = http.get(base).json().get("model_version_status", [])
            if any(state.get("state") == "AVAILABLE" for state in states):
                return
        except Exception:  # not listening yet
            pass
        container.reload()
        if container.status == "exited":
            raise RunnerFailed(f"TF Serving exited: {container.logs(tail=5).decode(errors='replace')}")
        time.sleep(0.5)
    raise RunnerFailed(f"TF Serving did not load the model within {READY_SECONDS} s")


def _time_in_process(invoke, workload: Workload, meta: dict) -> dict:
    """The runners' phases and scores, for a target timed from this process (HTTP)."""
    import numpy as np

    from exporter.benchmark.runners.tflite_runner import scores, time_phases

    phases = time_phases(invoke, workload.images, workload.warmup, workload.min_count, workload.min_seconds)
    top1 = [int(np.argmax(invoke(i))) for i in range(workload.images)]
    return {"threads": None, **phases, **scores(top1, meta)}


def tf_serving() -> TfServingRest:
    return TfServingRest("tf-serving", ("docker",))
