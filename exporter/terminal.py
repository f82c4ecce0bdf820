"""What the command line draws: a progress bar over the export's stages and summary tables."""

from __future__ import annotations

import os
import sys
import tempfile

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from exporter.run import STAGES, ExportResult

STDERR = Console(stderr=True)
STDOUT = Console()


class NativeStderr:
    """Sends file descriptor 2 to a temporary file while TensorFlow works.

    TensorFlow, absl and MLIR write their logs straight to fd 2, past Python; the one line a
    user needs would drown in them. The captured text is kept for ``--debug``.
    """

    def __enter__(self) -> NativeStderr:
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.log = tempfile.TemporaryFile()
        os.dup2(self.log.fileno(), 2)
        # What we mean to show still goes to the real stderr.
        self.console = Console(file=os.fdopen(os.dup(self.saved), "w"), stderr=True)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.console.file.close()

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


class StageProgress:
    """A rich progress bar on stderr that advances as each stage of an export is done."""

    def __init__(self, console: Console = STDERR, enabled: bool = True):
        self.bar = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} stages"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=len(STAGES))

    def __enter__(self) -> StageProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def update(self, stage: str, event: str) -> None:
        if event == "start":
            self.bar.update(self.task, description=stage)
        else:
            self.bar.advance(self.task)
            if self.bar.tasks[0].completed == len(STAGES):
                self.bar.update(self.task, description="done")


def _add_check_rows(table: Table, checks: dict) -> None:
    for name, check in checks.items():
        prefix = "" if name == "verification" else f"{name} "
        if "agreeing" not in check:  # a check without scores, e.g. Core ML's spec on Linux
            table.add_row(name, ", ".join(f"{k}: {v}" for k, v in check.items() if not isinstance(v, (list, dict))))
            continue
        table.add_row(
            f"{prefix}agreement",
            f"{check['agreeing']}/{check['decided']} decided images agree with the source "
            f"({check['runtime']}; {check['images'] - check['decided']} near-ties left out)",
        )
        if check["artifact_accuracy"] is not None:
            table.add_row(
                f"{prefix}accuracy",
                f"{check['artifact_accuracy']:.2%} (source {check['source_accuracy']:.2%}) "
                f"on {check['images']} held-out images",
            )
        table.add_row(f"{prefix}max abs diff", f"{check['max_abs_diff']:.3g}")


def _two_columns(title: str) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("")
    return table


def print_summary(result: ExportResult) -> None:
    report = result.report
    table = _two_columns(f"{report['modelFormat']} export of {report['model']['displayName']}")
    table.add_row("folder", result.output_dir)
    table.add_row("params", ", ".join(f"{k}={v}" for k, v in report["params"].items()) or "-")
    for entry in report["artifacts"]:
        table.add_row(entry["path"], f"{entry['bytes'] / 1e6:.3f} MB")
    _add_check_rows(table, report["checks"])
    table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    STDOUT.print(table)


def print_checks(export_dir: str, checks: dict) -> None:
    table = _two_columns(f"verification of {export_dir}")
    _add_check_rows(table, checks)
    STDOUT.print(table)


# What predict's table says of the scores, by what the artifact states they are.
SCORES_TITLES = {
    "probabilities": ("scores are probabilities", "probability"),
    "logits": ("scores are logits: apply a softmax for probabilities", "logit"),
    None: ("the artifact does not say whether its scores are probabilities or logits", "score"),
}


def print_predictions(predictions) -> None:
    kind = predictions[0].scores if predictions else None  # one artifact: one kind
    title, unit = SCORES_TITLES.get(kind, SCORES_TITLES[None])
    table = Table(title=f"predictions ({title})")
    table.add_column("image")
    table.add_column(f"top labels ({unit})")
    for prediction in predictions:
        table.add_row(prediction.image, ", ".join(f"{label} ({score:.3f})" for label, score in prediction.top))
    STDOUT.print(table)


def formats_table(entries: list[dict]) -> None:
    """The formats table (as ``describe_formats`` gives it) drawn for a terminal."""
    table = Table(title="modelFormats", show_lines=True)
    for column in ("modelFormat", "destination", "artifacts", "params (default; allowed)"):
        table.add_column(column)
    for entry in entries:
        params = "\n".join(f"{p['name']} ({p['default']}; {p['allowed']})" for p in entry["params"]) or "-"
        table.add_row(entry["modelFormat"], entry["destination"], "\n".join(entry["artifacts"]), params)
    STDOUT.print(table)
