"""Comparing a run with an earlier one (its benchmark.json): regressions beyond a stated margin.

As Coral's benchmarks do per machine, a baseline is only meaningful from the same machine; the
report keeps the baseline's machine description beside this run's.
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter.benchmark.rows import PASSED, Row
from exporter.core.errors import Code, ExportError

DEFAULT_MARGIN = 0.10
ACCURACY_POINTS = 0.01  # an accuracy drop of more than one point is a regression whatever the margin


def read_baseline(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        data["rows"] = [Row.from_dict(row) for row in data["rows"]]
    except OSError as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"--baseline {str(path)!r}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(
            Code.INVALID_ARGUMENT, f"--baseline {str(path)!r} is not a benchmark.json of this command: {error}"
        ) from None
    return data


def _worse(row: Row, old: Row, margin: float) -> list[str]:
    if old.status == PASSED and row.status != PASSED:
        return [f"status {row.status} (was {PASSED})"]
    if row.status != PASSED or old.status != PASSED:
        return []
    found = []
    if row.p50_ms > old.p50_ms * (1 + margin):
        found.append(f"p50 {row.p50_ms:.3g} ms vs {old.p50_ms:.3g} (+{row.p50_ms / old.p50_ms - 1:.0%})")
    if row.p99_ms > old.p99_ms * (1 + margin):
        found.append(f"p99 {row.p99_ms:.3g} ms vs {old.p99_ms:.3g} (+{row.p99_ms / old.p99_ms - 1:.0%})")
    if row.images_per_s < old.images_per_s * (1 - margin):
        found.append(f"{row.images_per_s:.4g} images/s vs {old.images_per_s:.4g}")
    if row.accuracy is not None and old.accuracy is not None and old.accuracy - row.accuracy > ACCURACY_POINTS:
        found.append(f"accuracy {row.accuracy:.2%} vs {old.accuracy:.2%}")
    if row.size_bytes and old.size_bytes and row.size_bytes > old.size_bytes * (1 + margin):
        found.append(f"size {row.size_bytes:,} B vs {old.size_bytes:,}")
    return found


def compare(rows: list[Row], baseline: dict, margin: float) -> list[dict]:
    """Mark each row that got worse than its baseline row beyond `margin`; the list of them."""
    earlier = {row.key: row for row in baseline["rows"]}
    regressions = []
    for row in rows:
        old = earlier.get(row.key)
        if old is None:
            continue
        found = _worse(row, old, margin)
        if found:
            row.regression = "; ".join(found)
            regressions.append({"format": row.label, "target": row.target, "what": row.regression})
    return regressions
