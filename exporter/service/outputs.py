"""Where a project's exports may be written: allowed buckets, allowed folders per project.

Checked when an export is asked for (the API) and again when a worker starts it; the local
destination then walks to the folder without following links (``exporter.destinations.local``).
"""

from __future__ import annotations

from pathlib import Path

from exporter.core.errors import ExportError, FieldViolation
from exporter.destinations.local import local_path
from exporter.service.models import under_root
from exporter.service.settings import ServiceSettings

FIELD = "outputConfig.gcsDestination.outputUriPrefix"


def project_of(name: str) -> str:
    """``projects/P/locations/L/...`` -> ``P``."""
    return name.split("/")[1]


def output_roots(settings: ServiceSettings, project: str) -> list[Path]:
    """The folders `project`'s local exports may be written under: its own when
    ``EXPORTER_PROJECT_OUTPUT_ROOTS`` lists it, else the shared ``EXPORTER_OUTPUT_ROOTS``."""
    return settings.output_roots_for(project)


def check_destination(prefix: str, settings: ServiceSettings, project: str) -> None:
    """An ``outputUriPrefix`` in an allowed bucket, or under the project's allowed folders (and
    not under another project's own folders), else INVALID_ARGUMENT naming the field."""
    if prefix.startswith("gs://"):
        bucket = prefix.removeprefix("gs://").split("/", 1)[0]
        if bucket not in settings.output_buckets:
            allowed = ", ".join(settings.output_buckets) or "none configured"
            raise ExportError.invalid(
                [
                    FieldViolation(
                        FIELD,
                        f"bucket {bucket!r} is not one exports may be written to (EXPORTER_OUTPUT_BUCKETS): {allowed}",
                    )
                ]
            )
        return
    path = local_path(prefix)
    if path is None:
        return
    roots = output_roots(settings, project)
    # A project without folders of its own writes under the shared roots, but never into a folder
    # that is another project's own.
    others = (
        []
        if project in settings.project_output_roots
        else [root for folders in settings.project_output_roots.values() for root in folders]
    )
    if not under_root(path, roots) or under_root(path, others):
        setting = (
            "EXPORTER_PROJECT_OUTPUT_ROOTS" if project in settings.project_output_roots else "EXPORTER_OUTPUT_ROOTS"
        )
        allowed = ", ".join(map(str, roots)) or "none configured"
        raise ExportError.invalid(
            [
                FieldViolation(
                    FIELD,
                    f"{str(path)!r} is outside the folders project {project}'s exports may be written to "
                    f"({setting}): {allowed}",
                )
            ]
        )
