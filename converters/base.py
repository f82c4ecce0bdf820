"""What a converter is, and the registry that maps each modelFormat to one.

A converter is two plain steps around one format's row of the table: ``convert`` writes the
artifact files into a folder, ``verify`` runs them in a real runtime against the source model.
Neither knows of HTTP, jobs or buckets.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from exporter.core.errors import Code, ExportError
from exporter.core.formats import FormatRow, format_row

if TYPE_CHECKING:
    from converters.verification import Reference, Verification
    from exporter.core.model_source import ModelSource


class Converter(abc.ABC):
    """One modelFormat's pipeline: SavedModel -> artifact files, and their verification."""

    def __init__(self, row: FormatRow):
        self.row = row

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def foundation(self) -> Converter:
        """The converter of the format this one builds on (the row's ``builds_on``)."""
        if self.row.builds_on is None:
            raise TypeError(f"{self.name} builds on no other format")
        return REGISTRY[self.row.builds_on]

    # The heavy libraries the converter imports, loaded during the export's load stage so that
    # the convert stage times the conversion itself.
    libraries: tuple[str, ...] = ()
    # Reports the convert step writes that still inform the user when the export then fails
    # (kept beside the failed attempt's report; never the artifacts themselves).
    kept_on_failure: tuple[str, ...] = ()

    def prepare(self) -> None:
        for library in self.libraries:
            importlib.import_module(library)

    @abc.abstractmethod
    def convert(self, source: ModelSource, workdir: Path, params: dict[str, str]) -> list[Path]:
        """Write the artifact files into `workdir`; return them."""

    @abc.abstractmethod
    def verify(
        self, source: ModelSource, workdir: Path, params: dict[str, str], reference: Reference
    ) -> dict[str, Verification]:
        """Run the artifact in `workdir` on the reference images and compare with the source.

        Returns the checks by name; ``verification`` is the one every format has.
        """


def library_failure(library: str, error: Exception) -> ExportError:
    """A conversion library's refusal of this model, as one clear FAILED_PRECONDITION line."""
    text = " ".join(str(error).split())
    if len(text) > 400:
        text = text[:400] + " ..."
    return ExportError(Code.FAILED_PRECONDITION, f"{library} cannot convert this model: {type(error).__name__}: {text}")


REGISTRY: dict[str, Converter] = {}

C = TypeVar("C", bound=type[Converter])


def register(name: str) -> Callable[[C], C]:
    """Class decorator: register one converter for the table row `name`."""

    def decorate(cls: C) -> C:
        if name in REGISTRY:
            raise ValueError(f"two converters registered for {name!r}")
        REGISTRY[name] = cls(format_row(name))
        return cls

    return decorate
