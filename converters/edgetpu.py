"""modelFormat ``edgetpu_tflite``: full-integer uint8 TFLite, checked op by op, then compiled.

Builds on the tflite pipeline (uint8 input and output, batch fixed to 1, metadata embedded). The
compatibility report says before compiling which ops will map to the Edge TPU and where the graph
splits; a model that cannot compile at all fails with the reason. The compiled model needs an
Edge TPU to run, so the verification runs the full-integer model the compiler took
(``model.tflite``, kept as the CPU fallback) in ai_edge_litert against the source.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from containers.edgetpu_compiler import compile_model, find_compiler
from converters.base import Converter, register
from converters.edgetpu_compat import compatibility_report, compile_blocker
from converters.tflite import MODES, METADATA_FILE, convert_to_tflite, metadata_json
from converters.tflite_metadata import embed_metadata
from converters.tflite_runtime import TFLiteModel
from converters.verification import CheckReport, compare
from exporter.errors import Code, ExportError
from exporter.report import engine_version

CPU_MODEL = "model.tflite"
EDGETPU_MODEL = "edgetpu_model.tflite"
COMPATIBILITY_FILE = "edgetpu_compatibility.json"
COMPILER_LOG = "edgetpu_compiler.log"
LABELS_FILE = "dict.txt"


def segment_name(index: int, count: int) -> str:
    return f"edgetpu_model_segment_{index}_of_{count}.tflite"


@register("edgetpu_tflite")
class EdgeTPUConverter(Converter):
    libraries = ("tensorflow",)

    def convert(self, source, workdir: Path, params: dict[str, str]) -> list[Path]:
        compiler = find_compiler()  # before the work: no compiler is a clear error at once
        flatbuffer = convert_to_tflite(source, "uint8", int(params["calibration_count"]))
        flatbuffer = embed_metadata(flatbuffer, source, version=engine_version(),
                                    description=f"{source.display_name}: image classifier for the Edge TPU")
        report = compatibility_report(flatbuffer)
        (workdir / COMPATIBILITY_FILE).write_text(json.dumps(report, indent=2) + "\n")
        if blocker := compile_blocker(report):
            raise ExportError(Code.FAILED_PRECONDITION, f"the model cannot compile for the Edge TPU: {blocker}")
        (workdir / CPU_MODEL).write_bytes(flatbuffer)
        segments = int(params["num_segments"])
        with tempfile.TemporaryDirectory(prefix="edgetpu-") as scratch:
            model = Path(scratch) / "model.tflite"
            model.write_bytes(flatbuffer)
            compiled = compile_model(compiler, model, params["min_runtime_version"], segments)
            if segments == 1:
                shutil.move(compiled.models[0], workdir / EDGETPU_MODEL)
            else:
                for index, path in enumerate(compiled.models):
                    shutil.move(path, workdir / segment_name(index, segments))
            log = compiled.log.read_text(errors="replace") if compiled.log else ""
            (workdir / COMPILER_LOG).write_text(compiled.stdout + ("\n" + log if log else ""))
        report["compiler"] = {"backend": compiled.backend, "command": compiled.command, **compiled.summary}
        (workdir / COMPATIBILITY_FILE).write_text(json.dumps(report, indent=2) + "\n")
        metadata = metadata_json(TFLiteModel(workdir / CPU_MODEL), "uint8")
        (workdir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        (workdir / LABELS_FILE).write_text("\n".join(source.labels) + "\n", encoding="utf-8")
        return sorted(workdir.iterdir())

    def verify(self, source, workdir: Path, params: dict[str, str], reference):
        scores = TFLiteModel(workdir / CPU_MODEL).predict(reference.inputs)
        check = compare("ai_edge_litert", reference, scores, MODES["uint8"].tolerance,
                        what=f"{CPU_MODEL} (the full-integer model the compiler took)")
        compatibility = json.loads((workdir / COMPATIBILITY_FILE).read_text())
        return {"verification": check, "edgetpu": CheckReport({
            "compiledModelRun": "not run: the compiled model needs an Edge TPU",
            "mappedToEdgeTpu": compatibility["mappedToEdgeTpu"],
            "operations": compatibility["operations"],
            "graphSplitsAtOp": compatibility["graphSplitsAtOp"],
            "warnings": compatibility["warnings"],
            "compiler": compatibility.get("compiler", {}),
        })}
