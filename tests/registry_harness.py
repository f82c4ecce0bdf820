"""Debian's docker-registry on loopback with its own config, and a small base image pushed to it.

The base stands in for tensorflow/serving (Docker Hub is not reachable here): one layer holding a
static busybox, under the configured base names, pushed with the engine's own registry client.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import httpx

from containers.registry import RegistryClient
from service_harness import free_port

BUSYBOX = Path("/bin/busybox")


class LocalRegistry:
    def __init__(self, root: Path, users: dict[str, str] | None = None, token_auth: str | None = None):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.credentials = next(iter(users.items())) if users else None
        config = root / "registry.yml"
        text = (
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        if users:  # basic auth with an htpasswd file (bcrypt), made with Debian's htpasswd
            lines = [
                subprocess.run(
                    ["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True
                ).stdout.strip()
                for user, password in users.items()
            ]
            (root / "htpasswd").write_text("\n".join(lines) + "\n")
            text += f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {root / 'htpasswd'}\n"
        elif token_auth:  # the token flow, with the issuer's `auth:` section
            text += token_auth
        config.write_text(text)
        self.process = subprocess.Popen(
            ["/usr/bin/docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, "docker-registry exited at start"
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "docker-registry did not come up in 30 s"
            time.sleep(0.1)

    def push_base(self, repository: str, tag: str) -> str:
        """A one-layer busybox image in Docker's v2 manifest format; returns its reference."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            tar.add(str(BUSYBOX), arcname="bin/busybox")
            link = tarfile.TarInfo("bin/sh")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        layer = gzip.compress(raw.getvalue(), mtime=0)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/bin", "MODEL_NAME=base"], "Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]},
                "history": [{"created_by": "test fixture: busybox-static"}],
            }
        ).encode()
        client = RegistryClient(self.host, self.credentials)
        layer_digest = client.upload(repository, layer)
        config_digest = client.upload(repository, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(config),
                    "digest": config_digest,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(layer),
                        "digest": layer_digest,
                    }
                ],
            }
        ).encode()
        client.put_manifest(repository, tag, manifest, "application/vnd.docker.distribution.manifest.v2+json")
        return f"{self.host}/{repository}:{tag}"

    def push_index(self, repository: str, tag: str, amd64_ref: str) -> str:
        """An image index with an arm64 entry first and the given amd64 image second."""
        client = RegistryClient(self.host, self.credentials)
        manifest_type = "application/vnd.docker.distribution.manifest.v2+json"
        amd64, _ = client.manifest(repository, amd64_ref.rsplit(":", 1)[1])
        body = json.dumps(amd64).encode()
        digest = client.put_manifest(repository, "amd64-only", body, manifest_type)
        decoy = json.dumps({**amd64, "layers": []}).encode()  # not runnable: must never be chosen
        decoy_digest = client.put_manifest(repository, "arm64-only", decoy, manifest_type)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                "manifests": [
                    {
                        "mediaType": manifest_type,
                        "size": len(decoy),
                        "digest": decoy_digest,
                        "platform": {"architecture": "arm64", "os": "linux"},
                    },
                    {
                        "mediaType": manifest_type,
                        "size": len(body),
                        "digest": digest,
                        "platform": {"architecture": "amd64", "os": "linux"},
                    },
                ],
            }
        ).encode()
        client.put_manifest(repository, tag, index, "application/vnd.docker.distribution.manifest.list.v2+json")
        return f"{self.host}/{repository}:{tag}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class DockerEngine:
    """Debian's dockerd with its own data root and socket, no bridge (the images run no network).

    Reuses an engine already answering at DOCKER_HOST; never starts a second one beside it.
    """

    def __init__(self, root: Path, insecure_registries: str = "127.0.0.0/8"):
        import os

        import docker

        self.process = None
        existing = os.environ.get("DOCKER_HOST")
        if existing:
            docker.DockerClient(base_url=existing).ping()
            self.host = existing
            return
        root.mkdir(parents=True, exist_ok=True)
        self.host = f"unix://{root}/docker.sock"
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "exec"),
                "--pidfile",
                str(root / "docker.pid"),
                "-H",
                self.host,
                "--bridge=none",
                "--iptables=false",
                "--insecure-registry",
                insecure_registries,
            ],
            stdout=open(root / "dockerd.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, (root / "dockerd.log").read_text()[-2000:]
            try:
                docker.DockerClient(base_url=self.host).ping()
                return
            except Exception:
                assert time.monotonic() < deadline, "dockerd did not come up in 60 s"
                time.sleep(0.3)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)


def docker_config_dir(root: Path, registry: str, user: str, password: str) -> Path:
    """A DOCKER_CONFIG folder whose config.json holds credentials for `registry`."""
    import base64

    root.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (root / "config.json").write_text(json.dumps({"auths": {registry: {"auth": token}}}))
    return root
