"""The engine's size limits read from the environment (EXPORTER_MAX_*): one rule for all of them."""

from __future__ import annotations

import os

from exporter.core.errors import Code, ExportError


def whole_number_setting(name: str, default: int, unit: str, minimum: int = 1) -> int:
    """The setting `name` as a whole number of `unit` (at least `minimum`), `default` when unset;
    anything else is INVALID_ARGUMENT naming the setting and what it takes."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ExportError(
            Code.INVALID_ARGUMENT, f"{name}={raw!r}: expected a whole number of {unit}, at least {minimum}"
        )
    return int(raw)
