"""A stop a signal asked for, remembered where no library can lose it.

The CLI's SIGINT/SIGTERM handler raises its CANCELLED error wherever Python happens to be; when
that is inside a callback TensorFlow's C++ runs, the library swallows it or replaces it with its
own error ("pybind11::error_already_set: MISMATCH ... REPLACED BY Stopped"). The stop is recorded
here as well, and the export pipeline lets it take precedence over whatever error it caused, so a
stopped export ends CANCELLED, with nothing kept, however the library unwound.
"""

from __future__ import annotations

from exporter.core.errors import ExportError

_requested: list[ExportError] = []


def request_stop(error: ExportError) -> None:
    _requested[:] = [error]


def requested_stop() -> ExportError | None:
    return _requested[0] if _requested else None
