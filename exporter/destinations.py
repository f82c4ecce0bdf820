"""Where an export lands: a staging folder first, then the final name in one step.

The export folder is ``model-export-<display-name>-<YYYY-MM-DDThh:mm:ss.sssZ>`` under the
destination prefix, as AutoML names it. Local destinations (a plain path or ``file:///abs``)
stage in a hidden sibling folder on the same file system and publish with one ``rename``, so
the final name holds a complete export or nothing.
"""
from __future__ import annotations

import errno
import os
import shutil
import secrets
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

from exporter.errors import Code, ExportError


def rfc3339_millis(when: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.sssZ`` in UTC, as AutoML writes timestamps."""
    when = when.astimezone(timezone.utc)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def export_folder_name(display_name: str, when: datetime) -> str:
    return f"model-export-{display_name}-{rfc3339_millis(when)}"


def os_error(error: OSError, doing: str) -> ExportError:
    """An OSError met while `doing` something, as the google.rpc code a user can act on."""
    where = f" {error.filename!r}" if error.filename else ""
    text = f"{doing}: {error.strerror or error}{where}"
    if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
        return ExportError(Code.RESOURCE_EXHAUSTED, text)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ExportError(Code.PERMISSION_DENIED, text)
    if error.errno == errno.ENOENT:
        return ExportError(Code.NOT_FOUND, text)
    if error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return ExportError(Code.FAILED_PRECONDITION, text)
    return ExportError(Code.INTERNAL, text)


class LocalDestination:
    """A folder on this machine's file system."""

    def __init__(self, folder: Path):
        self.folder = folder

    @property
    def uri(self) -> str:
        return str(self.folder)

    def stage(self, final_name: str) -> Path:
        """Make the destination folder and an empty staging folder inside it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if (self.folder / final_name).exists():
                raise ExportError(Code.ALREADY_EXISTS, f"{self.folder / final_name} already exists")
            # mkdir (not mkdtemp, which makes it 0700) so the export gets the user's umask.
            staging = self.folder / f".{final_name}.{secrets.token_hex(4)}.partial"
            staging.mkdir()
            return staging
        except OSError as error:
            raise os_error(error, f"cannot write to the destination {str(self.folder)!r}") from None

    def publish(self, staging: Path, final_name: str) -> str:
        """Move the finished staging folder to its final name; return the export's location."""
        final = self.folder / final_name
        try:
            os.rename(staging, final)  # atomic within one file system; refuses a non-empty target
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise ExportError(Code.ALREADY_EXISTS, f"{final} already exists") from None
            raise os_error(error, "cannot publish the export") from None
        return str(final)

    @staticmethod
    def discard(staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)


def local_path(prefix: str) -> Path | None:
    """The folder a local ``outputUriPrefix`` (a path or file:///abs) names; None for gs://."""
    if prefix.startswith("gs://"):
        return None
    if prefix.startswith("file://"):
        prefix = unquote(urlparse(prefix).path)
    return Path(prefix).expanduser().resolve()


def open_destination(prefix: str):
    """The destination of an ``outputUriPrefix`` already checked by the request contract."""
    folder = local_path(prefix)
    if folder is None:
        from exporter.gcs import GcsDestination

        return GcsDestination(prefix)
    return LocalDestination(folder)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
