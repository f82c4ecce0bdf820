"""Destinations of an export, chosen from the request's destination as MLflow chooses an
artifact repository: by URI scheme for ``gcsDestination.outputUriPrefix`` (``gs://``,
``file://`` or a plain path), and the registry for ``gcrDestination.outputUri``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from exporter.core.errors import Code, ExportError
from exporter.core.formats import DestinationKind
from exporter.core.request import ExportRequest
from exporter.destinations.base import Destination
from exporter.destinations.gcs import GcsDestination
from exporter.destinations.local import LocalDestination
from exporter.destinations.registry import RegistryDestination

# outputUriPrefix scheme -> the destination class (a plain path has no scheme).
FOLDER_SCHEMES: dict[str, type[Destination]] = {
    "gs": GcsDestination,
    "file": LocalDestination,
    "": LocalDestination,
}


def open_destination(request: ExportRequest, **options: Any) -> Destination:
    """The destination of a checked request. `options` are that destination's own settings
    (the registry's ``keep_context``); one it does not take is INVALID_ARGUMENT."""
    if request.row.destination is DestinationKind.GCR:
        kind: type[Destination] = RegistryDestination
    else:
        kind = FOLDER_SCHEMES[urlparse(request.destination).scheme]
    if unknown := sorted(set(options) - kind.options):
        raise ExportError(Code.INVALID_ARGUMENT, f"{', '.join(unknown)}: not an option of a {kind.__name__}")
    return kind.from_request(request, **options)


__all__ = ["Destination", "open_destination", "GcsDestination", "LocalDestination", "RegistryDestination"]
