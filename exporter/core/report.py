"""export_report.json: everything the engine knows about one export, kept beside the artifact."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

REPORT_FILE = "export_report.json"
VERSIONED_LIBRARIES = ("tensorflow", "ai-edge-litert", "numpy", "pillow")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def engine_version() -> str:
    return _version("automl-export-engine") or "0+unknown"


def file_entry(path: Path, root: Path) -> dict:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path.relative_to(root)), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def artifact_files(root: Path) -> list[dict]:
    return [file_entry(p, root) for p in sorted(root.rglob("*")) if p.is_file() and p.name != REPORT_FILE]


def build_report(
    *, request, source, workdir: Path, checks: dict, timings: dict, created: str, sandbox: dict | None = None
) -> dict:
    """The report; `sandbox` is the protection the convert and verify steps ran under."""
    return {
        "engine": {"name": "automl-export-engine", "version": engine_version()},
        "createTime": created,
        "modelFormat": request.model_format,
        "params": request.params,
        "model": source.describe(),
        "artifacts": artifact_files(workdir),
        "checks": {name: check.as_dict() for name, check in checks.items()},
        "timingsSeconds": timings,
        **({"sandbox": sandbox} if sandbox is not None else {}),
        "versions": {
            "python": platform.python_version(),
            **{name: _version(name) for name in VERSIONED_LIBRARIES},
        },
    }


def write_report(report: dict, folder: Path) -> Path:
    path = folder / REPORT_FILE
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
