"""modelFormat ``edgetpu_tflite``: the tflite format's full-integer uint8 model, checked op by op,
then compiled.

Builds on ``tflite``: its converter writes ``model.tflite`` (uint8 input and output, batch fixed to
1, metadata embedded), ``dict.txt`` and ``tflite_metadata.json``; this one adds the compatibility
report (which ops map to the Edge TPU, where the graph splits, each verdict's published source and
the known remedy for an op that stops the mapping; written before a compiler is looked for, and
kept beside the failed attempt's report when no compiler is found or the compile fails), then the
compiled model and the compiler's log. The compiled model needs an Edge TPU
to run, so the verification is the tflite format's, on ``model.tflite`` (kept as the CPU fallback).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from containers.edgetpu_compiler import find_compiler
from converters.base import Converter, register
from converters.edgetpu_tflite.compat import compatibility_report, compile_blocker
from converters.tflite.converter import MODEL_FILE
from converters.verification import CheckReport
from exporter.core.errors import Code, ExportError

EDGETPU_MODEL = "edgetpu_model.tflite"
COMPATIBILITY_FILE = "edgetpu_compatibility.json"
COMPILER_LOG = "edgetpu_compiler.log"


def segment_name(index: int, count: int) -> str:
    return f"edgetpu_model_segment_{index}_of_{count}.tflite"


def tflite_params(params: dict[str, str]) -> dict[str, str]:
    """The tflite params of the model the compiler takes: full-integer uint8, always.

    The Edge TPU runs integer ops only, so of the budget's remedies only those that keep every op
    integer apply (more calibration images, ranges chosen per tensor): a layer kept in float
    (which the tflite default, ``all``, may do) would end the part of the graph the Edge TPU runs
    at that layer.
    """
    return {
        "quantization": "uint8",
        "calibration_count": params["calibration_count"],
        "quantization_remedies": "integer",
    }


def _remedies(report: dict) -> str:
    """The known remedies for the ops that stop the mapping, as the tail of an error message."""
    known = [f"{b['op']}: {b['remedy']}" for b in report["blockers"] if "remedy" in b]
    return "; known remedies: " + "; ".join(known) if known else ""


@register("edgetpu_tflite")
class EdgeTPUConverter(Converter):
    libraries = ("tensorflow",)
    kept_on_failure = (COMPATIBILITY_FILE,)  # what maps is worth knowing before a compiler is installed

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        self.foundation.convert(source, workdir, tflite_params(params))
        report = compatibility_report((workdir / MODEL_FILE).read_bytes())
        self._write_report(workdir, report)
        if blocker := compile_blocker(report):
            raise ExportError(
                Code.FAILED_PRECONDITION, f"the model cannot compile for the Edge TPU: {blocker}{_remedies(report)}"
            )
        compiler = find_compiler()
        segments = int(params["num_segments"])
        with tempfile.TemporaryDirectory(prefix="edgetpu-") as scratch:
            model = Path(scratch) / MODEL_FILE
            shutil.copyfile(workdir / MODEL_FILE, model)
            compiled = compiler.compile(model, params["min_runtime_version"], segments)
            names = [EDGETPU_MODEL] if segments == 1 else [segment_name(i, segments) for i in range(segments)]
            for path, name in zip(compiled.models, names, strict=True):
                shutil.move(path, workdir / name)
            log = compiled.log.read_text(errors="replace") if compiled.log else ""
            (workdir / COMPILER_LOG).write_text(compiled.stdout + ("\n" + log if log else ""))
        report["compiler"] = {"backend": compiled.backend, "command": compiled.command, **compiled.summary}
        self._write_report(workdir, report)
        return sorted(workdir.iterdir())

    @staticmethod
    def _write_report(workdir: Path, report: dict) -> None:
        (workdir / COMPATIBILITY_FILE).write_text(json.dumps(report, indent=2) + "\n")

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        checks = self.foundation.verify(source, workdir, tflite_params(params), reference)
        compatibility = json.loads((workdir / COMPATIBILITY_FILE).read_text())
        checks["edgetpu"] = CheckReport(
            {
                "compiledModelRun": "not run: the compiled model needs an Edge TPU",
                "mappedToEdgeTpu": compatibility["mappedToEdgeTpu"],
                "operations": compatibility["operations"],
                "graphSplitsAtOp": compatibility["graphSplitsAtOp"],
                "blockers": compatibility["blockers"],
                "warnings": compatibility["warnings"],
                "compiler": compatibility.get("compiler", {}),
            }
        )
        return checks
