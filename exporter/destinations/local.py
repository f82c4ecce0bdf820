"""A local folder destination: a plain path or ``file:///abs``.

The export is staged in a hidden sibling folder on the same file system and published with one
``rename``, so the final ``model-export-...`` name holds a complete export or nothing.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from urllib.parse import unquote, urlparse

from exporter.core.errors import Code, ExportError, os_error
from exporter.core.request import ExportRequest
from exporter.destinations.base import Destination


def local_path(prefix: str) -> Path | None:
    """The folder a local ``outputUriPrefix`` (a path or file:///abs) names; None for gs://."""
    if prefix.startswith("gs://"):
        return None
    if prefix.startswith("file://"):
        prefix = unquote(urlparse(prefix).path)
    return Path(prefix).expanduser().resolve()


class LocalDestination(Destination):
    """A folder on this machine's file system."""

    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def from_request(cls, request: ExportRequest) -> LocalDestination:
        folder = local_path(request.destination)
        assert folder is not None  # chosen by scheme: never gs://
        return cls(folder)

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

    def publish(self, staging: Path, final_name: str, report: dict) -> str:
        """Move the finished staging folder to its final name; return the export's location."""
        final = self.folder / final_name
        try:
            os.rename(staging, final)  # atomic within one file system; refuses a non-empty target
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise ExportError(Code.ALREADY_EXISTS, f"{final} already exists") from None
            raise os_error(error, "cannot publish the export") from None
        return str(final)
