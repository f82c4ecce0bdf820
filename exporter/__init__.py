"""The model export engine: AutoML's models.export for trained image classifiers.

``exporter.export_model(model_dir, output_config)`` runs one export; the heavy libraries load
only when it runs.
"""


def __getattr__(name: str):
    if name in ("export_model", "ExportResult"):
        from exporter import run

        return getattr(run, name)
    if name in ("ExportError", "Code"):
        from exporter.core import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")


__all__ = ["export_model", "ExportResult", "ExportError", "Code"]
