"""The one interface every destination implements: stage, publish, discard, details.

An export is written into the folder ``stage`` returns, verified there, and handed to
``publish`` with its report; ``discard`` removes what is left of a staging folder whatever
happened (it is gone already after a publish that moved it); ``keep_folder`` is where a failed
attempt's report is kept. ``details`` are the facts of the
publish that belong in the report (a pushed image's digest, say); none for a folder.
"""

from __future__ import annotations

import abc
import shutil
from pathlib import Path
from typing import Any, ClassVar

from exporter.core.errors import ExportError
from exporter.core.request import ExportRequest


class Destination(abc.ABC):
    """Where an export lands; the pipeline never asks which kind it holds."""

    # The keyword options `from_request` takes beyond the request (none for most).
    options: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abc.abstractmethod
    def from_request(cls, request: ExportRequest, **options: Any) -> Destination:
        """The destination a checked request names."""

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The destination as the request named it."""

    @abc.abstractmethod
    def stage(self, final_name: str) -> Path:
        """An empty local folder to build the export in; checks the destination before any work."""

    @abc.abstractmethod
    def publish(self, staging: Path, final_name: str, report: dict) -> str:
        """Make the finished export visible at its final place; return where it is."""

    def check(self) -> None:
        """Raise the error an export would meet at this destination, where it can be known cheaply
        before any work (a folder that cannot be written); destinations that cannot tell without
        doing the work (a bucket, a registry) answer at ``stage`` or ``publish``."""
        return None

    def replaced_error(self) -> ExportError | None:
        """The error to give when the destination is no longer the one staged into (a folder
        swapped for another since ``stage``), which explains any failure after it; else None."""
        return None

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def keep_folder(self, staging: Path, name: str) -> tuple[Path, Path]:
        """A folder `name` beside the staging folder, made if missing, for what a failed attempt
        keeps: (the path to write in, the path to show)."""
        folder = staging.parent / name
        folder.mkdir(exist_ok=True)
        return folder, folder

    def shown(self, path: Path) -> Path:
        """The path to show a user for `path`, one this destination handed out."""
        return path

    def find_published(self, final_name: str) -> tuple[str, dict] | None:
        """(where, report) of a complete export already published under `final_name`, else None:
        how a later attempt of an operation finds what an earlier one published but could not
        record. Destinations that overwrite (a registry tag) have nothing to find."""
        return None

    @property
    def details(self) -> dict:
        return {}
