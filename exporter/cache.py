"""The export cache: the same model content, format and params reuse an artifact that was converted
and verified before, instead of converting again.

An entry is keyed by a digest of everything the artifact depends on: the model's content (SavedModel
files and labels), its input description (size, normalization), the images it is calibrated and
verified on, the format, the full params and the engine's version. It holds the artifact's files
and the original verification. A hit copies the files into the export's own staging folder, so the
operation still publishes its own folder and report; the report says it was served from the cache
and carries the original checks.

Safe for several processes (and machines, on shared storage): an entry is written into a temporary
folder and renamed into place whole (a reader never sees half of one), and a file lock is shared by
readers while they copy and taken alone by the eviction, which removes the least recently used
entries beyond the size limit.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from exporter.core.formats import DestinationKind
from exporter.core.model_source import ModelSource
from exporter.core.report import REPORT_FILE, engine_version
from exporter.core.request import ExportRequest

ENTRY_FILE = "entry.json"


class ExportCache:
    """A folder of cached artifacts, at most `max_bytes` in all (least recently used go first)."""

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.entries = self.folder / "entries"
        self.incoming = self.folder / "incoming"

    def key(self, source: ModelSource, request: ExportRequest) -> str:
        """The digest of what the artifact depends on."""
        digest = hashlib.sha256()
        described = {
            "model": source.describe(),
            "format": request.model_format,
            "params": request.params,
            "engine": engine_version(),
        }
        digest.update(json.dumps(described, sort_keys=True).encode())
        for folder in (source.calibration_dir, source.heldout_dir):  # quantization and checks use them
            for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
                digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    @contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record(self, key: str) -> dict | None:
        """Entry `key`'s record (its original verification), or None on a miss."""
        try:
            return json.loads((self.entries / key / ENTRY_FILE).read_text())
        except (OSError, ValueError):
            return None

    def copy_artifact(self, key: str, staging: Path) -> None:
        """Copy entry `key`'s artifact files into `staging`."""
        entry = self.entries / key
        with self._lock(exclusive=False):  # not evicted while it is copied
            shutil.copytree(entry / "artifact", staging, dirs_exist_ok=True)
            os.utime(entry / ENTRY_FILE)  # used now: the last to be evicted

    def put(self, key: str, staging: Path, record: dict) -> None:
        """Keep the verified artifact in `staging` under `key` (the first writer wins), then evict."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.entries.mkdir(parents=True, exist_ok=True)
        temporary = self.incoming / f"{key}.{secrets.token_hex(4)}"
        try:
            shutil.copytree(staging, temporary / "artifact", ignore=shutil.ignore_patterns(REPORT_FILE))
            (temporary / ENTRY_FILE).write_text(json.dumps(record, indent=2))
            try:
                os.rename(temporary, self.entries / key)  # whole, or not at all
            except OSError:
                pass  # another worker cached the same artifact first: theirs is as good
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        self.evict()

    def evict(self) -> list[str]:
        """Remove the least recently used entries until the cache fits its size; their keys."""
        removed = []
        with self._lock(exclusive=True):
            entries = []
            for entry in self.entries.iterdir():
                try:
                    used = (entry / ENTRY_FILE).stat().st_mtime
                except OSError:
                    continue
                size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
                entries.append((used, size, entry))
            total = sum(size for _, size, _ in entries)
            for _, size, entry in sorted(entries, key=lambda e: e[0]):
                if total <= self.max_bytes:
                    break
                doomed = self.incoming / f"{entry.name}.evicted.{secrets.token_hex(4)}"
                os.rename(entry, doomed)  # out of sight at once, then removed
                shutil.rmtree(doomed, ignore_errors=True)
                total -= size
                removed.append(entry.name)
        return removed


class CachedSteps:
    """convert() and verify() of a cache hit: the artifact copied, the original checks."""

    def __init__(self, cache: ExportCache, key: str, staging: Path, record: dict):
        self.cache, self.key, self.staging, self.record = cache, key, staging, record
        self.report = {
            "cache": {
                "servedFromCache": True,
                "key": key,
                "original": {k: record[k] for k in ("createTime", "timingsSeconds", "sandbox") if k in record},
            }
        }

    def convert(self) -> None:
        self.cache.copy_artifact(self.key, self.staging)

    def verify(self) -> dict:
        from converters.verification import CheckReport

        return {name: CheckReport(values) for name, values in self.record["checks"].items()}


class StoringSteps:
    """The real convert() and verify() of a miss; a verified artifact is kept in the cache."""

    def __init__(self, steps, cache: ExportCache, key: str, staging: Path, started: str):
        self.steps, self.cache, self.key, self.staging, self.started = steps, cache, key, staging, started
        self.converted_at = time.perf_counter()
        self.report = {"cache": {"servedFromCache": False, "key": key}}

    def convert(self) -> None:
        self.steps.convert()

    def verify(self) -> dict:
        checks = self.steps.verify()  # raises when the artifact is outside its tolerance: not kept
        record = {
            "createTime": self.started,
            "timingsSeconds": {"convertAndVerify": round(time.perf_counter() - self.converted_at, 3)},
            "checks": {name: check.as_dict() for name, check in checks.items()},
        }
        self.cache.put(self.key, self.staging, record)
        return checks


@contextmanager
def steps_through_cache(
    cache: ExportCache | None,
    source: ModelSource,
    request: ExportRequest,
    staging: Path,
    started: str,
    real_steps: Callable[[], AbstractContextManager],
) -> Iterator:
    """The export's convert and verify steps: from the cache on a hit (the real steps, and the
    sandbox they may start, are never made), else the real ones, keeping their artifact."""
    if cache is None or request.row.destination is not DestinationKind.GCS:  # an image is pushed: not cached
        with real_steps() as steps:
            steps.report = {}
            yield steps
        return
    key = cache.key(source, request)
    record = cache.record(key)
    if record is not None:
        yield CachedSteps(cache, key, staging, record)
        return
    with real_steps() as steps:
        yield StoringSteps(steps, cache, key, staging, started)
