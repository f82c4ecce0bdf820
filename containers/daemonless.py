"""The daemonless back end: append one layer with the model to the base image, over HTTP.

What ``crane append`` does: read the base image's manifest (linux/amd64 from an index) and
config, mount its blobs into the target repository (within one registry) or copy them (from
another registry: every base byte travels, gigabytes for the GPU base), upload one gzip layer
with the model and labels, write the new config (env, ports, labels, history, diff_ids), and
write the manifest last, so a failed push never leaves the tag pointing at a half image.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from containers.image_builder import ImageBuilder
from containers.recipe import LABELS_PATH, MODEL_DIR, PORTS, Recipe
from containers.registry import ImageRef, RegistryClient, digest_of
from exporter.core.errors import Code, ExportError

LAYER_TYPES = {
    "application/vnd.oci.image.manifest.v1+json": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.distribution.manifest.v2+json": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.manifest.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json": "application/vnd.docker.container.image.v1+json",
}


def model_layer(context: Path) -> tuple[bytes, str]:
    """The gzip layer holding the model and labels (fixed times: the same export, the same bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(path: Path, name: str) -> None:
            info = tar.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)

        for directory in ("models", "models/default", MODEL_DIR):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path in sorted((context / "model").rglob("*")):
            add(path, f"{MODEL_DIR}/{path.relative_to(context / 'model').as_posix()}")
        add(context / "dict.txt", LABELS_PATH)
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def new_config(base: dict, recipe: Recipe, diff_id: str) -> dict:
    config = json.loads(json.dumps(base))
    settings = config.setdefault("config", {})
    env = [e for e in settings.get("Env") or [] if e.split("=", 1)[0] not in recipe.env]
    settings["Env"] = env + [f"{k}={v}" for k, v in recipe.env.items()]
    settings["ExposedPorts"] = {**(settings.get("ExposedPorts") or {}), **{p: {} for p in PORTS}}
    settings["Labels"] = {**(settings.get("Labels") or {}), **recipe.labels}
    config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], diff_id]
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    config["created"] = now
    config["history"] = [
        *(config.get("history") or []),
        {"created": now, "created_by": f"automl-export-engine: COPY model /{MODEL_DIR}"},
    ]
    return config


class DaemonlessBuilder(ImageBuilder):
    name = "daemonless"

    def push(self, context: Path, recipe: Recipe, target: ImageRef) -> dict:
        """Build the image from the base and the build context, push it; the push's facts."""
        base = ImageRef.parse(recipe.base)
        source = RegistryClient(base.registry)
        destination = source if base.registry == target.registry else RegistryClient(target.registry)
        manifest, media_type = source.manifest(base.repository, base.reference, recipe.os, recipe.architecture)
        if media_type not in LAYER_TYPES:
            raise ExportError(Code.FAILED_PRECONDITION, f"base image manifest type {media_type} is not supported")
        mounted, copied, present = 0, 0, 0
        for descriptor in [manifest["config"], *manifest["layers"]]:
            digest = descriptor["digest"]
            if destination.has_blob(target.repository, digest):
                present += 1
                continue
            if destination is source and destination.mount(target.repository, digest, base.repository):
                mounted += 1
                continue
            destination.upload(target.repository, source.blob(base.repository, digest))
            copied += 1
        base_config = json.loads(source.blob(base.repository, manifest["config"]["digest"]))
        layer, diff_id = model_layer(context)
        layer_digest = destination.upload(target.repository, layer)
        config = json.dumps(new_config(base_config, recipe, diff_id), separators=(",", ":")).encode()
        config_digest = destination.upload(target.repository, config)
        image = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": CONFIG_TYPES[media_type], "size": len(config), "digest": config_digest},
            "layers": [
                *manifest["layers"],
                {"mediaType": LAYER_TYPES[media_type], "size": len(layer), "digest": layer_digest},
            ],
        }
        body = json.dumps(image, separators=(",", ":")).encode()
        digest = destination.put_manifest(target.repository, target.tag, body, media_type)  # last
        return {
            "backend": "daemonless",
            "image": str(target),
            "digest": digest or digest_of(body),
            "base": recipe.base,
            "baseBlobsMounted": mounted,
            "baseBlobsCopied": copied,
            "baseBlobsAlreadyThere": present,
            "bytesUploaded": destination.uploaded_bytes,
            "modelLayerBytes": len(layer),
        }
