"""Running the matrix: each format exported once, each artifact run on each target that takes it.

Exports go through ``exporter.run.export_model`` in this process, so TensorFlow is imported once
for all of them; each target runs in its own process (or browser, container, device). A failing
cell becomes its row's status and reason, and the matrix goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from exporter.benchmark.formats import SOURCE, FormatSpec
from exporter.benchmark.rows import EXPORT_FAILED, NOT_RUNNABLE, Row
from exporter.benchmark.targets import Artifact, NotRunnable, RunnerFailed, Target, Workload
from exporter.core.errors import ExportError
from exporter.core.model_source import ModelSource

# Formats no target runs on this kind of machine, and why.
NO_TARGET = {
    "core_ml": "Core ML predicts on macOS and iOS only; no target here runs core_ml",
}
# Side files of an export: what a size column should not count.
SIDE_FILES = {
    "export_report.json",
    "dict.txt",
    "tflite_metadata.json",
    "edgetpu_compatibility.json",
    "edgetpu_compiler.log",
}

Tick = Callable[[str], None]  # advance the progress bar by one step, naming the next


def prepare_workload(source: ModelSource, folder: Path, min_count: int, min_seconds: float, warmup: int):
    """The held-out images as every runner reads them, and the source's accuracy on them."""
    from PIL import Image

    from converters.verification import make_reference

    reference = make_reference(source)
    folder.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(reference.inputs, dtype=np.float32).tofile(folder / "inputs.f32")
    np.ascontiguousarray(reference.images.pixels, dtype=np.uint8).tofile(folder / "pixels.u8")
    labels = reference.images.labels
    meta = {
        "shape": list(reference.inputs.shape),
        "labels": [int(label) for label in labels],
        "source_top1": [int(top) for top in reference.scores.argmax(1)],
        "mean": list(source.mean),
        "std": list(source.std),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "png").mkdir(exist_ok=True)
    for index, pixels in enumerate(reference.images.pixels):  # lossless, at the input size
        Image.fromarray(pixels).save(folder / "png" / f"{index}.png")
    known = labels >= 0
    accuracy = float((reference.scores.argmax(1)[known] == labels[known]).mean()) if known.any() else None
    workload = Workload(folder, len(labels), min_count, min_seconds, warmup)
    return workload, accuracy


def artifact_size(model_format: str, folder: Path) -> int:
    skip = SIDE_FILES | ({"model.tflite"} if model_format == "edgetpu_tflite" else set())
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in skip)


def export_one(
    model: Path, source: ModelSource, spec: FormatSpec, exports: Path, **read_options
) -> tuple[Artifact, float | None]:
    """The artifact of `spec` and its export seconds (all stages, verification included)."""
    from exporter.run import export_model

    if spec.model_format == SOURCE:
        return Artifact(SOURCE, {}, source.saved_model_dir), None
    # A docker image is the serving SavedModel on TF Serving's base: the target runs that layout.
    model_format, params = (
        ("tf_saved_model", {}) if spec.model_format == "docker" else (spec.model_format, spec.params_dict)
    )
    config = {"modelFormat": model_format, "gcsDestination": {"outputUriPrefix": str(exports)}, "params": params}
    result = export_model(model, config, **read_options)
    return Artifact(spec.model_format, spec.params_dict, Path(result.output_dir)), sum(result.seconds.values())


def run_format(
    model: Path,
    source: ModelSource,
    spec: FormatSpec,
    targets: list[Target],
    workload: Workload,
    exports: Path,
    tick: Tick,
    unavailable: dict[str, str | None],
    source_accuracy: float | None,
    **read_options,
) -> list[Row]:
    """Every row of one format: its export, then each target that takes it."""
    takers = [t for t in targets if spec.model_format in t.formats]
    names = [t.name for t in takers] or ["-"]
    rows = [Row(spec.model_format, spec.params_text, name, NOT_RUNNABLE) for name in names]
    for row in rows:
        row.source_accuracy = source_accuracy
    try:
        artifact, seconds = export_one(model, source, spec, exports, **read_options)
    except ExportError as error:
        return _all_failed(rows, f"{error.code.name}: {' '.join(error.message.split())}", tick, len(takers))
    except Exception as error:  # a library's crash in one export never stops the matrix
        return _all_failed(rows, f"{type(error).__name__}: {error}", tick, len(takers))
    finally:
        tick(f"exported {spec.label}")
    size = artifact_size(spec.model_format, artifact.folder)
    for row in rows:
        row.size_bytes, row.export_seconds = size, seconds
    if not takers:
        rows[0].reason = NO_TARGET.get(spec.model_format, f"no chosen target runs {spec.model_format}")
    for target, row in zip(takers, rows if takers else [], strict=True):
        try:
            if target.name not in unavailable:
                unavailable[target.name] = _why_not(target)
            if unavailable[target.name] is not None:
                raise NotRunnable(unavailable[target.name])
            row.take(target.measure(artifact, workload))
        except (NotRunnable, RunnerFailed) as error:
            row.status, row.reason = NOT_RUNNABLE, str(error)
        except Exception as error:  # one cell's crash is that row's reason
            row.status, row.reason = NOT_RUNNABLE, f"{type(error).__name__}: {error}"
        tick(f"{spec.label} on {target.name}")
    return rows


def _why_not(target: Target) -> str | None:
    try:
        target.check()
    except NotRunnable as error:
        return str(error)
    return None


def _all_failed(rows: list[Row], reason: str, tick: Tick, runs: int) -> list[Row]:
    for row in rows:
        row.status, row.reason = EXPORT_FAILED, reason
    for _ in range(runs):
        tick("")
    return rows
