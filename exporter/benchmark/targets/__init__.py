"""Every benchmark target by name, and the --targets list resolved against them.

A name is a target (``litert-cpu-2t-noxnnpack``, ``ssh:pi4``) or a family: ``litert`` (1, 2 and 4
threads, XNNPACK on and off), ``onnxruntime`` and ``openvino`` (1, 2 and 4 threads), ``ssh``
(every inventory device), ``all``.
"""

from __future__ import annotations

from exporter.benchmark.inventory import Device
from exporter.benchmark.targets.base import Artifact, NotRunnable, RunnerFailed, Target, Workload
from exporter.benchmark.targets.edgetpu import edgetpu
from exporter.benchmark.targets.js import ChromiumWasm, NodeWasm
from exporter.benchmark.targets.local import litert_cpu, onnxruntime_cpu, openvino_cpu, tensorflow_cpu
from exporter.benchmark.targets.serving import tf_serving
from exporter.benchmark.targets.ssh import ssh_devices
from exporter.core.errors import Code, ExportError

__all__ = ["Artifact", "NotRunnable", "RunnerFailed", "Target", "Workload", "all_targets", "resolve_targets"]


def all_targets(devices: list[Device] = ()) -> list[Target]:
    return [
        tensorflow_cpu(),
        *litert_cpu(),
        *onnxruntime_cpu(),
        *openvino_cpu(),
        NodeWasm("node-wasm", ("tf_js",)),
        ChromiumWasm("chromium-wasm", ("tf_js",)),
        tf_serving(),
        edgetpu(),
        *ssh_devices(list(devices)),
    ]


def families(targets: list[Target]) -> dict[str, list[Target]]:
    return {
        "all": targets,
        "litert": [t for t in targets if t.name.startswith("litert-")],
        "onnxruntime": [t for t in targets if t.name.startswith("onnxruntime-")],
        "openvino": [t for t in targets if t.name.startswith("openvino-")],
        "ssh": [t for t in targets if t.name.startswith("ssh:")],
    }


def resolve_targets(names: list[str] | None, devices: list[Device] = ()) -> list[Target]:
    """The targets named (all of them when None), in the table's order; an unknown name is one
    INVALID_ARGUMENT listing what is allowed."""
    targets = all_targets(devices)
    if not names:
        return targets
    by_name = {t.name: [t] for t in targets} | families(targets)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ExportError(
            Code.INVALID_ARGUMENT,
            f"--targets {', '.join(map(repr, unknown))}: not a target; allowed: {', '.join(by_name)}"
            + ("" if devices else " (ssh:<device> needs --inventory FILE)"),
        )
    empty = [name for name in names if not by_name[name]]
    if empty:
        raise ExportError(Code.INVALID_ARGUMENT, f"--targets {empty[0]!r} names no device: give --inventory FILE")
    chosen = {t.name for name in names for t in by_name[name]}
    return [t for t in targets if t.name in chosen]
