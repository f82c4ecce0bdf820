"""The model export engine: AutoML's models.export for trained image classifiers.

    import exporter

    result = exporter.export("my_model", "tflite", output="exports", quantization="uint8")

``export``, ``verify`` and ``predict`` take what the command line takes and return typed
results; ``export_model(model_dir, output_config)`` is the same export with the REST API's request
JSON. The heavy libraries load only when an export runs.
"""

from __future__ import annotations

import importlib

# name -> the module that defines it; imported on first use, so `import exporter` stays instant.
_EXPORTS = {
    "export": "exporter.api",
    "verify": "exporter.api",
    "predict": "exporter.prediction",
    "Prediction": "exporter.prediction",
    "Export": "exporter.api",
    "export_model": "exporter.run",
    "ExportResult": "exporter.run",
    "ExportError": "exporter.core.errors",
    "Code": "exporter.core.errors",
    "describe_formats": "exporter.core.formats",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
