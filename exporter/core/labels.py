"""The labels file (``dict.txt``): one label a line, in the order of the model's scores.

A label may hold spaces, so the file is always split by lines, never by whitespace.
"""

from __future__ import annotations

from pathlib import Path

LABELS_FILE = "dict.txt"


def labels_text(labels: list[str] | tuple[str, ...]) -> str:
    return "\n".join(labels) + "\n"


def write_labels(folder: Path, labels: list[str] | tuple[str, ...]) -> Path:
    path = folder / LABELS_FILE
    path.write_text(labels_text(labels), encoding="utf-8")
    return path


def parse_labels(text: str) -> list[str]:
    """Labels from a labels file's text: each non-empty line, without surrounding blanks."""
    return [line.strip() for line in text.splitlines() if line.strip()]
