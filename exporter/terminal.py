"""What the command line draws: a progress bar over the export's stages and summary tables."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from functools import cached_property
from typing import TYPE_CHECKING

# rich is imported where a table or a bar is drawn, not here: `exporter predict` on a pipe draws
# neither and answers sooner without it.
if TYPE_CHECKING:
    from rich.console import Console

    from exporter.run import ExportResult


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
        return self

    @cached_property
    def console(self) -> Console:
        """A console on the real stderr, for what we mean to show while the log goes aside."""
        from rich.console import Console

        return Console(file=os.fdopen(os.dup(self.saved), "w"), stderr=True)

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        if "console" in self.__dict__:
            self.console.file.close()
        os.close(self.saved)

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


class StageProgress:
    """The export's stages as it runs: a rich progress bar on a terminal (``mode="bar"``), a plain
    line per finished stage elsewhere (``mode="lines"``: a log or a CI job sees it advance), or
    nothing (``mode="off"``: ``--json``)."""

    def __init__(self, stages: tuple[str, ...], console: Console, mode: str = "bar"):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.stages, self.console, self.mode = stages, console, mode
        self.started: dict[str, float] = {}
        self.bar = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} stages"),
            TimeElapsedColumn(),
            console=console,
            disable=mode != "bar",
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=len(stages))

    def __enter__(self) -> StageProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def update(self, stage: str, event: str) -> None:
        if event == "start":
            self.started[stage] = time.perf_counter()
            self.bar.update(self.task, description=stage)
            return
        self.bar.advance(self.task)
        if self.bar.tasks[0].completed == len(self.stages):
            self.bar.update(self.task, description="done")
        if self.mode == "lines":
            seconds = time.perf_counter() - self.started.get(stage, time.perf_counter())
            self.console.print(f"{stage}: done in {seconds:.1f} s", soft_wrap=True, highlight=False)


def _plain(value) -> str:
    """A report entry as one line: ``key: value; ...``, a nested entry as ``key (key: value, ...)``."""
    if isinstance(value, dict):
        return "; ".join(
            f"{key} ({', '.join(f'{k}: {_plain(v)}' for k, v in inner.items())})"
            if isinstance(inner, dict)
            else f"{key}: {_plain(inner)}"
            for key, inner in value.items()
        )
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(item) for item in value)
    return str(value)


def show(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]], show_lines: bool = False) -> None:
    """Rows on stdout, never cut: a table on a terminal (long values fold onto the next line), plain
    lines elsewhere (``key: value`` rows; a multi-column row as its first cell and ``  column: value``
    lines), which a pipe or a log keeps whole at any width."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=show_lines)
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    lines = [title]
    for first, *rest in rows:
        if not any(headers):
            lines.append(f"{first}: {rest[0]}")
            continue
        lines.append(first)
        for header, value in zip(headers[1:], rest, strict=True):
            lines.extend(f"  {header}: {line}" for line in value.splitlines())
    print("\n".join(lines), flush=True)


def _check_rows(checks: dict) -> list[tuple[str, str]]:
    rows = []
    for name, check in checks.items():
        prefix = "" if name == "verification" else f"{name} "
        if "agreeing" not in check:  # a check without scores: Core ML's spec on Linux, tf_js's backends
            rows.append((name, _plain(check)))
            continue
        rows.append(
            (
                f"{prefix}agreement",
                f"{check['agreeing']}/{check['decided']} decided images agree with the source "
                f"({check['runtime']}; {check['images'] - check['decided']} near-ties left out)",
            )
        )
        if check["artifact_accuracy"] is not None:
            rows.append(
                (
                    f"{prefix}accuracy",
                    f"{check['artifact_accuracy']:.2%} (source {check['source_accuracy']:.2%}) "
                    f"on {check['images']} held-out images",
                )
            )
        rows.append((f"{prefix}max abs diff", f"{check['max_abs_diff']:.3g}"))
    return rows


def print_summary(result: ExportResult) -> None:
    report = result.report
    rows = [
        ("folder", result.output_dir),
        ("params", ", ".join(f"{k}={v}" for k, v in report["params"].items()) or "-"),
        *((entry["path"], f"{entry['bytes'] / 1e6:.3f} MB") for entry in report["artifacts"]),
        *_check_rows(report["checks"]),
        ("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items())),
    ]
    show(f"{report['modelFormat']} export of {report['model']['displayName']}", ("", ""), rows)


def print_checks(export_dir: str, checks: dict) -> None:
    show(f"verification of {export_dir}", ("", ""), _check_rows(checks))


# What predict's table says of the scores, by what the artifact states they are.
SCORES_TITLES = {
    "probabilities": ("scores are probabilities", "probability"),
    "logits": ("scores are logits: apply a softmax for probabilities", "logit"),
    None: ("the artifact does not say whether its scores are probabilities or logits", "score"),
}


def print_predictions(predictions, as_json: bool = False) -> None:
    if as_json:
        entries = [
            {"image": p.image, "scores": p.scores, "top": [{"label": label, "score": score} for label, score in p.top]}
            for p in predictions
        ]
        print(json.dumps(entries, indent=2))
        return
    kind = predictions[0].scores if predictions else None  # one artifact: one kind
    title, unit = SCORES_TITLES.get(kind, SCORES_TITLES[None])
    rows = [(p.image, ", ".join(f"{label} ({score:.3f})" for label, score in p.top)) for p in predictions]
    show(f"predictions ({title})", ("image", f"top labels ({unit})"), rows)


def formats_table(entries: list[dict]) -> None:
    """The formats table (as ``describe_formats`` gives it)."""
    rows = []
    for entry in entries:
        params = "\n".join(f"{p['name']} ({p['default']}; {p['allowed']})" for p in entry["params"]) or "-"
        name = entry["modelFormat"] + ("\n(extension)" if entry["extension"] else "")
        rows.append((name, entry["destination"], "\n".join(entry["artifacts"]), params))
    show(
        "modelFormats", ("modelFormat", "destination", "artifacts", "params (default; allowed)"), rows, show_lines=True
    )
