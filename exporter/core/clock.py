"""Time as AutoML writes it, and the export folder name built from it."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339_millis(when: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.sssZ`` in UTC, as AutoML writes timestamps."""
    when = when.astimezone(UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def export_folder_name(display_name: str, when: datetime) -> str:
    """``model-export-<display-name>-<timestamp>``: the folder AutoML makes under the prefix."""
    return f"model-export-{display_name}-{rfc3339_millis(when)}"
