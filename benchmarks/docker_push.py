"""Benchmark: the two docker back ends against a plain `docker build` + `docker push`, one run.

    .venv/bin/python benchmarks/docker_push.py [--base-mb 200]

Starts Debian's docker-registry and dockerd on loopback (as the tests do), pushes a base image
with about --base-mb MB of random data in its layers (a stand-in for tensorflow/serving, whose
size matters here; a busybox would hide the cost), exports the colour canary as an x86_64 image
with each back end, and times a plain `docker build` + `docker push` of the same Dockerfile and
context. Prints seconds, the ratio to the plain build-and-push, and the bytes each uploaded.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import BIN, REPO, save, timed

sys.path.insert(0, str(REPO / "tests"))
from registry_harness import DockerEngine, LocalRegistry  # noqa: E402

CANARY = REPO / ".cache" / "benchmark-models" / "canary"


def push_big_base(registry: LocalRegistry, megabytes: int) -> tuple[str, int]:
    """A base of a few random layers (incompressible) totalling about `megabytes` MB."""
    from containers.registry import RegistryClient

    client = RegistryClient(registry.host)
    layers, diff_ids = [], []
    for index in range(4):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            data = os.urandom(megabytes * 1024 * 1024 // 4)
            info = tarfile.TarInfo(f"opt/base/blob{index}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        layer = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
        layers.append(
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(layer),
                "digest": client.upload("tensorflow/serving", layer),
            }
        )
        diff_ids.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [],
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": client.upload("tensorflow/serving", config),
            },
            "layers": layers,
        }
    ).encode()
    client.put_manifest(
        "tensorflow/serving", "2.19.0", manifest, "application/vnd.docker.distribution.manifest.v2+json"
    )
    return f"{registry.host}/tensorflow/serving:2.19.0", sum(layer["size"] for layer in layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-mb", type=int, default=200)
    args = parser.parse_args()
    if not (CANARY / "manifest.json").exists():
        timed([str(BIN / "exporter"), "sample-model", str(CANARY), "--kind", "colour-canary", "--size", "32"])
    work = Path(tempfile.mkdtemp(prefix="bench-docker-", dir="/tmp"))
    (work / "registry").mkdir()
    registry = LocalRegistry(work / "registry")
    engine = DockerEngine(work / "d")
    try:
        base, base_bytes = push_big_base(registry, args.base_mb)
        env = {**os.environ, "DOCKER_HOST": engine.host, "EXPORTER_SERVING_BASE_CPU": base}
        rows = {}
        for builder in ("daemonless", "engine"):
            engine.client().images.prune(filters={"dangling": False})
            target = f"{registry.host}/bench/canary-{builder}:v1"
            context = work / f"context-{builder}"
            started = time.perf_counter()
            done = subprocess.run(
                [
                    str(BIN / "exporter"),
                    "export",
                    "--model",
                    str(CANARY),
                    "--format",
                    "docker",
                    "--output",
                    target,
                    "--param",
                    f"builder={builder}",
                    "--json",
                    "--build-context",
                    str(context),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            answer = json.loads(done.stdout)
            rows[builder] = {
                "seconds": time.perf_counter() - started,
                "publish": answer["seconds"]["publish"],
                "bytes": answer["report"]["image"].get("bytesUploaded"),
            }
        # The plain way, on the same context: docker build + docker push (the base not cached).
        client = engine.client()
        for image in client.images.list():
            client.images.remove(image.id, force=True)
        plain_target = f"{registry.host}/bench/canary-plain:v1"
        started = time.perf_counter()
        for command in (
            ["docker", "build", "-t", plain_target, str(work / "context-engine")],
            ["docker", "push", plain_target],
        ):
            subprocess.run(command, check=True, capture_output=True, env={**env, "DOCKER_BUILDKIT": "0"})
        plain = time.perf_counter() - started
    finally:
        engine.stop()
        registry.stop()
    result = {
        "base_bytes": base_bytes,
        "plain_seconds": plain,
        "rows": rows,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    lines = [
        f"Base of {base_bytes / 1e6:.0f} MB (random data), x86_64 image of the colour canary, one loopback registry.",
        "",
        "| back end | publish s (push) | whole export s | x plain build+push | bytes uploaded |",
        "| --- | --- | --- | --- | --- |",
    ]
    for builder, row in rows.items():
        uploaded = "-" if row["bytes"] is None else f"{row['bytes']:,}"
        lines.append(
            f"| {builder} | {row['publish']:.2f} | {row['seconds']:.1f} | {row['publish'] / plain:.3f} | {uploaded} |"
        )
    lines.append(f"| plain `docker build` + `docker push` | {plain:.2f} | - | 1.000 | - |")
    lines += [
        "",
        "'publish' is the engine's own timing of building and pushing the image (the export's "
        "conversion and verification come before it and are the same for both back ends).",
    ]
    save("docker-push", result, "\n".join(lines))


if __name__ == "__main__":
    main()
