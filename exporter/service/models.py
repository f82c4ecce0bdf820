"""Model import: a model folder from an allow-listed root, checked and copied into the store."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from exporter.core.errors import Code, ExportError, FieldViolation
from exporter.core.manifest import DISPLAY_NAME, DISPLAY_NAME_RULE
from exporter.core.model_snapshot import copy_without_following
from exporter.core.model_source import check_confined, check_model_folder, read_model
from exporter.core.model_types import MODEL_TYPES
from exporter.service.resources import SEGMENT
from exporter.service.settings import ServiceSettings
from exporter.service.store import ModelRow, Store, utc_now


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ImageClassificationModelMetadata(_Message):
    model_type: StrictStr | None = None


class ModelFields(_Message):
    display_name: StrictStr | None = None
    image_classification_model_metadata: ImageClassificationModelMetadata | None = None


class ImportModelRequest(_Message):
    """``POST /v1beta1/{parent}/models:import`` (an extension: AutoML trains models instead)."""

    source_uri: StrictStr = Field(max_length=2000)
    model_id: StrictStr | None = None
    model: ModelFields | None = None


def under_root(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def parse_import(body: object) -> ImportModelRequest:
    try:
        return ImportModelRequest.model_validate(body)
    except ValidationError as error:
        raise ExportError.invalid(
            [
                FieldViolation(
                    ".".join(map(str, e["loc"])) or "body",
                    "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
                )
                for e in error.errors()
            ]
        ) from None


def _check_source(uri: str, settings: ServiceSettings) -> Path | str:
    """The allowed local folder, or gs:// URI, a model is imported from."""
    if uri.startswith("gs://"):
        bucket = uri.removeprefix("gs://").split("/", 1)[0]
        if bucket not in settings.import_buckets:
            allowed = ", ".join(settings.import_buckets) or "none configured (EXPORTER_IMPORT_BUCKETS)"
            raise ExportError(
                Code.PERMISSION_DENIED,
                f"sourceUri {uri!r} is outside the buckets models may be imported from: {allowed}",
            )
        return uri
    source = Path(uri.removeprefix("file://")).expanduser()
    if not source.is_absolute():
        raise ExportError.invalid(
            [FieldViolation("sourceUri", "must be an absolute path, file:///abs/dir or gs://bucket/dir")]
        )
    source = source.resolve()
    if not under_root(source, settings.import_roots):
        allowed = ", ".join(map(str, settings.import_roots)) or "none configured (EXPORTER_IMPORT_ROOTS)"
        raise ExportError(
            Code.PERMISSION_DENIED,
            f"sourceUri {str(source)!r} is outside the folders models may be imported from: {allowed}",
        )
    if not source.is_dir():
        raise ExportError(Code.NOT_FOUND, f"sourceUri {str(source)!r} is not a folder on the server")
    return source


def import_model(store: Store, settings: ServiceSettings, parent: str, request: ImportModelRequest) -> ModelRow:
    source = _check_source(request.source_uri, settings)
    model_id = request.model_id or f"ICN{secrets.randbelow(10**19):019d}"
    if not SEGMENT.match(model_id):
        raise ExportError.invalid([FieldViolation("modelId", f"{model_id!r} is not a valid model id")])
    name = f"{parent}/models/{model_id}"
    if store.get_model(name) is not None:
        raise ExportError(Code.ALREADY_EXISTS, f"model {name} already exists")

    overrides = request.model or ModelFields()
    display_name = overrides.display_name
    if display_name is not None and not DISPLAY_NAME.match(display_name):
        raise ExportError.invalid([FieldViolation("model.displayName", f"{display_name!r}: {DISPLAY_NAME_RULE}")])
    metadata = overrides.image_classification_model_metadata
    model_type = metadata.model_type if metadata else None
    if model_type is not None and model_type not in MODEL_TYPES:
        raise ExportError.invalid(
            [
                FieldViolation(
                    "model.imageClassificationModelMetadata.modelType",
                    f"{model_type!r} is not a model type; allowed: {', '.join(MODEL_TYPES)}",
                )
            ]
        )

    if not isinstance(source, str):
        # Links, manifest paths and operations, before anything is copied into the store.
        check_model_folder(source)
    # One folder per project and location (the parent's segments, checked as resource names), so
    # the same model id in two projects never collides; an unlucky race on the same name is
    # ALREADY_EXISTS below, and no message names a server path.
    _, project, _, location = parent.split("/")
    folder = settings.models_dir / project / location
    target = folder / model_id
    staging = folder / f".{model_id}.{secrets.token_hex(4)}.partial"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(source, str):
            from exporter.destinations.gcs import download_prefix

            staging.mkdir()
            download_prefix(source, staging)
        else:
            copy_without_following(source, staging)
        # The copy is what the service keeps and exports: a link swapped in after the check above
        # was copied as a link, and ends here, before the service writes into the copy.
        check_confined(staging)
        manifest_path = staging / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        except ValueError as error:
            raise ExportError(Code.INVALID_ARGUMENT, f"manifest.json is not valid JSON: {error}") from None
        if display_name is not None:
            manifest["display_name"] = display_name
        if model_type is not None:
            manifest["model_type"] = model_type
        manifest.setdefault("display_name", Path(str(source).rstrip("/")).name)
        manifest_path.unlink(missing_ok=True)  # a file of its own, not one a link leads to
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        checked = read_model(staging)  # the same checks as a standalone export, no TensorFlow
        try:
            # os.rename: atomic, and refuses a non-empty target; a leftover empty one is replaced.
            os.rename(staging, target)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                raise ExportError(Code.ALREADY_EXISTS, f"model {name} already exists") from None
            raise
    except OSError as error:
        raise ExportError(Code.INTERNAL, f"cannot copy the model into the store: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    now = utc_now()
    return store.add_model(
        ModelRow(
            name=name,
            parent=parent,
            display_name=checked.display_name,
            model_type=checked.model_type,
            path=str(target),
            create_time=now,
            update_time=now,
        )
    )
