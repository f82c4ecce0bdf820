"""Which ops of a TFLite model the Edge TPU compiler will map to the TPU, op by op, and why not.

Walks the flatbuffer (op codes and versions, tensor types and shapes, options) against
``data/edgetpu_ops.json``: Coral's list of supported operations with the constraints checked
here, the ops public compiler reports show refused (with the known remedy), and the op versions
the last compiler is reported to reject. Every rule names its source, and so does every op's
verdict in the report. The compiler maps ops in graph order up to the first one it cannot map;
that op and everything after it run on the CPU, so the report says where the graph splits.
No compiler runs here: the report is what the rules predict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RULES = json.loads((Path(__file__).resolve().parent / "data" / "edgetpu_ops.json").read_text())
QUANTIZED = {"UINT8", "INT8"}
# Parameters (weights, biases) may be int32 besides the 8-bit activations.
PARAMETER_TYPES = QUANTIZED | {"INT32"}
MOSTLY_CPU = 0.5  # below this share of ops on the TPU the report warns


@dataclass
class OpReport:
    index: int
    op: str
    version: int
    edgetpu: bool
    reason: str  # why it runs on the CPU; empty when it maps
    source: str = ""  # where the rule behind the verdict is published
    remedy: str = ""  # the known way to make the op map, where one is published


@dataclass(frozen=True)
class Verdict:
    """Why an op does not map, citing the rule's source; an empty reason when it maps."""

    reason: str = ""
    sources: tuple[str, ...] = ()
    remedy: str = ""

    @property
    def source(self) -> str:
        return "; ".join(RULES["sources"][key] for key in self.sources)


def _tensor_rule(name: str, reason: str) -> Verdict:
    return Verdict(reason, (RULES["tensor_rules"][name]["source"],))


def _names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def _problem(op: str, version: int, operator, tensors, constant: set[int], axes_of: dict[int, list[int]]) -> Verdict:
    from mediapipe.tasks.metadata import schema_py_generated as schema

    if op in RULES["refused"]:
        refusal = RULES["refused"][op]
        return Verdict(
            f"{op} is not an operation the Edge TPU supports (public compiler reports show it refused)",
            ("coral-ops", *refusal["sources"]),
            refusal["remedy"],
        )
    if op not in RULES["ops"]:
        return Verdict(f"{op} is not an operation the Edge TPU supports", ("coral-ops",))
    limit = RULES["max_versions"].get(op)
    if limit and version > limit["max"]:
        return Verdict(
            f"{op} version {version} is newer than the compiler takes (at most {limit['max']})", (limit["source"],)
        )
    rule = RULES["ops"][op]
    inputs = [tensors[i] for i in (operator.inputs if operator.inputs is not None else []) if i >= 0]
    outputs = [tensors[i] for i in (operator.outputs if operator.outputs is not None else [])]
    type_names = _names(schema.TensorType)
    for tensor in inputs + outputs:
        kind = type_names[tensor.type]
        is_parameter = id(tensor) in constant
        allowed = PARAMETER_TYPES if is_parameter else QUANTIZED
        if kind not in allowed and not (op in ("QUANTIZE", "DEQUANTIZE") and kind == "FLOAT32"):
            return _tensor_rule("quantized", f"tensor {tensor.name.decode()!r} is {kind}, not 8-bit quantized")
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        if signature is not None and any(int(d) < 0 for d in np.asarray(signature).ravel()):
            return _tensor_rule("static_shape", f"tensor {tensor.name.decode()!r} has a dynamic shape")
        shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
        if not is_parameter and len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            return _tensor_rule(
                "three_innermost",
                f"tensor {tensor.name.decode()!r} {shape}: only the 3 innermost dimensions may exceed 1",
            )
    options = operator.builtinOptions
    cited = (rule["source"],)
    if rule.get("no_fused_activation") and getattr(options, "fusedActivationFunction", 0):
        return Verdict(f"{op} with a fused activation function", cited)
    if rule.get("spatial_axes_only") and len(inputs) > 1:
        axes = axes_of.get(id(inputs[1]))
        if axes is not None and not set(axes) <= {1, 2}:
            return Verdict(f"{op} over axes {sorted(axes)}: only the x and y dimensions (1, 2) may be reduced", cited)
    if "max_elements" in rule and inputs:
        elements = int(np.prod(inputs[0].shape)) if inputs[0].shape is not None else 0
        if elements > rule["max_elements"]:
            return Verdict(f"{op} over {elements} elements (at most {rule['max_elements']})", cited)
    return Verdict()


def compatibility_report(model_bytes: bytes) -> dict:
    """The op-by-op Edge TPU compatibility report of a TFLite flatbuffer."""
    from mediapipe.tasks.metadata import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    op_names = _names(schema.BuiltinOperator)
    subgraph = model.subgraphs[0]
    tensors = subgraph.tensors
    constant: set[int] = set()  # tensors with data in the model: weights, biases, axes
    axes_of: dict[int, list[int]] = {}
    for tensor in tensors:
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        if data is not None and len(data):
            constant.add(id(tensor))
            if tensor.type == schema.TensorType.INT32:
                axes_of[id(tensor)] = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.int32).tolist()
    reports: list[OpReport] = []
    split = None
    for index, operator in enumerate(subgraph.operators):
        code = model.operatorCodes[operator.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        op = op_names.get(builtin, f"BUILTIN_{builtin}")
        if op == "CUSTOM":
            op = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
        verdict = _problem(op, code.version, operator, tensors, constant, axes_of)
        if split is None and verdict.reason:
            split = index
        if split is not None and not verdict.reason and index > split:
            verdict = Verdict(
                f"after the graph splits at op {split} (the compiler maps ops only up to the first it cannot)",
                ("coral-compiling",),
            )
        reports.append(
            OpReport(index, op, code.version, not verdict.reason, verdict.reason, verdict.source, verdict.remedy)
        )
    mapped = sum(r.edgetpu for r in reports)
    type_names = _names(schema.TensorType)
    input_type = type_names[tensors[subgraph.inputs[0]].type]
    report = {
        # The compiler release the rules describe: no compiler ran to make this report.
        "rulesForCompilerVersion": RULES["compiler_version"],
        "inputType": input_type,
        "operations": len(reports),
        "mappedToEdgeTpu": mapped,
        "runOnCpu": len(reports) - mapped,
        "graphSplitsAtOp": split,
        "opVersions": sorted({f"{r.op} v{r.version}" for r in reports}),
        "ops": [asdict(r) for r in reports],
        # The ops that stop or cut the mapping, once each, with the known way around them.
        "blockers": _blockers(reports),
        "warnings": [],
    }
    if reports and mapped / len(reports) < MOSTLY_CPU:
        report["warnings"].append(
            f"only {mapped} of {len(reports)} ops map to the Edge TPU; the rest run on the CPU, which is slower"
        )
    if split is not None:
        first = reports[split]
        report["warnings"].append(
            f"the graph splits at op {split} ({first.op}): it and every op after it run on the CPU"
            + (f"; remedy: {first.remedy}" if first.remedy else "")
        )
    return report


def _blockers(reports: list[OpReport]) -> list[dict]:
    """One entry per op kind that does not map for a reason of its own (not the split after it)."""
    blockers: dict[str, dict] = {}
    for r in reports:
        if r.edgetpu or r.reason.startswith("after the graph splits"):
            continue
        entry = blockers.setdefault(r.op, {"op": r.op, "count": 0, "firstIndex": r.index, "reason": r.reason})
        entry["count"] += 1
        entry.update({"source": r.source, **({"remedy": r.remedy} if r.remedy else {})})
    return list(blockers.values())


def compile_blocker(report: dict) -> str | None:
    """Why the compiler cannot compile the model at all, or None."""
    if report["inputType"] not in QUANTIZED:
        return f"the model's input is {report['inputType']}: the Edge TPU needs a full-integer (uint8/int8) model"
    if report["mappedToEdgeTpu"] == 0:
        first = report["ops"][0]["reason"] if report["ops"] else "the model has no ops"
        return f"no op maps to the Edge TPU: {first}"
    return None
