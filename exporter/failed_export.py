"""What an export that fails after staging leaves its user: an error that helps, and its report.

The failed attempt's artifacts are never kept (nothing half-written reaches the destination), but
its report is, where it has more to say than the error line: when a check missed its tolerance
(every number it measured, the remedies the converter tried, the params that would make it pass),
or when the convert step wrote reports that still inform (``Converter.kept_on_failure``, e.g. the
Edge TPU compatibility report, kept when no compiler is found or the compile fails).

It is kept in ``.<export name>.failed/export_report.json`` beside the staging folder: for a folder
destination that is the destination folder, where the user looks; for a bucket or a registry it is
this machine's temporary folder, since a bucket's readers would take any folder there for an
export. The name starts with a dot (hidden from ``ls`` and from globs like ``model-export-*``), ends
in ``.failed``, and the folder holds no artifact; the report says ``"state": "FAILED"``, and
``exporter verify`` refuses it. The service does not keep the folder: it stores the report with
the failed operation and serves it under ``:exportReport``.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from exporter.core.errors import Code, ExportError
from exporter.core.report import REPORT_FILE, write_report

FAILED_SUFFIX = ".failed"
# A budget looser than this is no remedy worth naming: the artifact would no longer be the model.
MAX_SUGGESTED_BUDGET = 0.10


class ExportFailed(ExportError):
    """An export that failed after staging: the original error's code and message, explained, with
    the failed attempt's report (and where it was kept, when it was)."""

    def __init__(self, error: ExportError, message: str, report: dict, report_path: Path | None):
        super().__init__(error.code, message, list(error.violations))
        self.report = report
        self.report_path = report_path


def failed_check(error: ExportError) -> dict | None:
    """The check that missed its tolerance, as measured; None for other failures."""
    check = getattr(error, "check", None)  # VerificationFailed's, or one the sandboxed child sent
    return check.as_dict() if check is not None else None


def _budget_that_passes(row, check: dict) -> dict | None:
    """The smallest disagreement budget the measured flips fit in, where the format takes one."""
    param = row.param("max_disagreement")
    decided = check.get("decided") or 0
    flips = decided - check.get("agreeing", decided)
    if param is None or not decided or flips <= check.get("allowed_disagreements", 0):
        return None
    limit = (check.get("tolerance") or {}).get("max_abs_diff")
    if limit is not None and check.get("max_abs_diff", 0) > limit:
        return None  # the scores are off too: no budget of flips alone makes it pass
    needed = math.ceil(flips / decided * 1000) / 1000  # a fraction of decided images
    value = f"{needed:g}"
    if needed > MAX_SUGGESTED_BUDGET or param.problem(value) is not None:
        return None
    return {
        "params": {"max_disagreement": value},
        "outcome": "passes",
        "why": f"the {flips} flips measured on {decided} decided images fit a budget of {value}",
    }


def _float_instead(params: dict[str, str], row, check: dict) -> list[dict]:
    """Lighter quantization that keeps float arithmetic: likely to pass, not measured here."""
    quantization = params.get("quantization")
    param = row.param("quantization")
    if param is None or quantization is None:
        return []
    suggestions = []
    if quantization in ("uint8", "int8", "dynamic_range") and "float16" in param.allowed:
        suggestions.append(
            {
                "params": {"quantization": "float16"},
                "outcome": "not measured",
                "why": "float16 stores the weights rounded and computes in float: no activation quantization",
            }
        )
    tolerance = check.get("tolerance") or {}
    limit = tolerance.get("max_abs_diff")
    if quantization == "float16" and limit is not None and check.get("max_abs_diff", 0) > limit:
        suggestions.append(
            {
                "params": {"quantization": "float32"},
                "outcome": "not measured",
                "why": "float32 keeps the source's arithmetic: scores within rounding",
            }
        )
    return suggestions


def suggested_params(row, params: dict[str, str], check: dict | None) -> list[dict]:
    """The params that would (measured) or may (not measured) make the failed check pass."""
    if check is None:
        return []
    budget = _budget_that_passes(row, check)
    return ([budget] if budget else []) + _float_instead(params, row, check)


def _remedy_text(entry) -> str:
    """One try of the converter's remedies (converters/quantization_budget.py's entries), short."""
    if not isinstance(entry, dict):
        return str(entry)
    what = [str(entry.get("remedy") or entry.get("name") or "remedy")]
    if "calibration_images" in entry:
        what.append(f"{entry['calibration_images']} calibration images")
    if entry.get("range_rule") not in (None, "min_max"):
        what.append(f"{entry['range_rule']} ranges")
    if entry.get("float_layers"):
        what.append(f"{len(entry['float_layers'])} layers in float")
    if "flips" in entry and "decided" in entry:
        allowed = f", allowed {entry['allowed']}" if "allowed" in entry else ""
        dropped = "" if entry.get("improved", True) else " (dropped: no better than the best before it)"
        return f"{', '.join(what)}: {entry['flips']} of {entry['decided']} flip{allowed}{dropped}"
    return ", ".join(what)


def explain(error: ExportError, check: dict | None, suggestions: list[dict]) -> str:
    """The error's message, then the remedies tried and the params that would make it pass."""
    if check is None:
        return error.message
    remedies = check.get("remedies") or []
    parts = [error.message.rstrip(".")]
    parts.append(
        "remedies tried: " + "; ".join(_remedy_text(r) for r in remedies)
        if remedies
        else "no remedy ran for this format and quantization"
    )
    for suggestion in suggestions:
        params = ", ".join(f"{key}={value}" for key, value in suggestion["params"].items())
        verb = "passes with" if suggestion["outcome"] == "passes" else "may pass with (not measured)"
        parts.append(f"{verb} params {params}: {suggestion['why']}")
    return ". ".join(parts)


def convert_reports(staging: Path, names: tuple[str, ...]) -> dict:
    """The convert step's JSON reports worth keeping, by file name, as far as they were written."""
    reports = {}
    for name in names:
        try:
            reports[name] = json.loads(_read_regular_file(staging / name))
        except (OSError, ValueError):
            continue  # not written before the failure (or cut short by it): nothing to keep
    return reports


MAX_KEPT_REPORT_BYTES = 4 << 20


def _read_regular_file(path: Path) -> bytes:
    """A file the (possibly sandboxed, untrusted) convert step wrote: never through a link, never
    a device or a fifo, never more than a report's size, so it cannot bring a host file out."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_KEPT_REPORT_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEPT_REPORT_BYTES:
        raise OSError(f"{path.name} is larger than a report")
    return data


def failure_report(
    *, error: ExportError, partial: dict, check: dict | None, suggestions: list[dict], reports: dict
) -> dict:
    """The failed attempt's report: what a finished export's report says, as far as it got, and why
    it failed. `partial` holds the keys known before the failure (format, params, model, timings);
    `reports` the convert step's reports (the service serves them inside this one)."""
    return {
        "state": "FAILED",
        "note": "the export failed: no artifact was published; this report explains why",
        **partial,
        "error": error.to_status(),
        "failedCheck": check,
        "suggestedParams": suggestions,
        "convertReports": reports,
    }


def keep_report(folder: Path, report: dict) -> Path:
    """Write the failed attempt's report, and beside it each of the convert step's reports it holds
    (under their usual names), into `folder`; return the report's path."""
    for name, content in report["convertReports"].items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")
    return write_report(report, folder)


def failed_folder_name(final_name: str) -> str:
    return f".{final_name}{FAILED_SUFFIX}"


def is_failed_report(report: dict) -> bool:
    return report.get("state") == "FAILED"


def refuse_failed_report(report: dict, folder: Path) -> None:
    if is_failed_report(report):
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"{str(folder)!r} holds the {REPORT_FILE} of a failed export, not an export",
        )
