"""The report's charts (PNG, matplotlib): latency against size per target, export time per format."""

from __future__ import annotations

from pathlib import Path

from exporter.benchmark.rows import Row

ACCURACY_DROP_MARKED = 0.01  # rows losing more than a point of accuracy against the source are ringed


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def latency_vs_size(rows: list[Row], path: Path) -> bool:
    """p50 latency against artifact size, one series per target; False when no row ran."""
    ran = [row for row in rows if row.p50_ms is not None]  # passed, or ran without agreeing
    if not ran:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=100)
    for target in dict.fromkeys(row.target for row in ran):
        mine = [row for row in ran if row.target == target]
        axes.plot([row.size_bytes / 1e6 for row in mine], [row.p50_ms for row in mine], "o", label=target, alpha=0.8)
    for name in dict.fromkeys(row.short_label for row in ran):  # one label per artifact, at its fastest
        fastest = min((row for row in ran if row.short_label == name), key=lambda row: row.p50_ms)
        axes.annotate(
            name, (fastest.size_bytes / 1e6, fastest.p50_ms), fontsize=7, xytext=(4, -10), textcoords="offset points"
        )
    dropped = [
        row
        for row in ran
        if row.accuracy is not None
        and row.source_accuracy is not None
        and row.source_accuracy - row.accuracy > ACCURACY_DROP_MARKED
    ]
    if dropped:
        axes.plot(
            [row.size_bytes / 1e6 for row in dropped],
            [row.p50_ms for row in dropped],
            "o",
            markersize=14,
            markerfacecolor="none",
            markeredgecolor="red",
            label="accuracy drop > 1 point",
        )
    axes.set_xlabel("artifact size (MB)")
    axes.set_ylabel("p50 latency at batch 1 (ms)")
    axes.set_yscale("log")
    axes.set_title("Latency against size, per target")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def export_times(rows: list[Row], path: Path) -> bool:
    """A bar per exported format and params: the export's seconds, verification included."""
    times = {row.short_label: row.export_seconds for row in rows if row.export_seconds is not None}
    if not times:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(times) + 1.5), dpi=100)
    labels = list(times)
    axes.barh(labels, [times[label] for label in labels], color="tab:blue")
    for index, label in enumerate(labels):
        axes.annotate(
            f"{times[label]:.1f} s", (times[label], index), xytext=(3, -3), textcoords="offset points", fontsize=8
        )
    axes.invert_yaxis()
    axes.set_xlabel("export seconds (load, convert, verify, publish)")
    axes.set_title("Export time per format")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
