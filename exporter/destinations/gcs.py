"""The gs:// destination (and model source), with the official google-cloud-storage client.

Credentials the usual way: application default credentials, or a service-account key file named
by ``EXPORTER_GCS_CREDENTIALS``; with ``STORAGE_EMULATOR_HOST`` set (an emulator) the client is
anonymous. An export lands complete or not at all, as far as GCS allows: the files are uploaded
under a hidden staging prefix (the slow part, which may fail midway), then copied server-side to
the final prefix with ``export_report.json`` copied last, then the staging objects are deleted.
A reader that sees ``export_report.json`` in a ``model-export-...`` folder sees a complete export;
a failure during the copy removes what was copied.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

from exporter.core.errors import Code, ExportError
from exporter.core.report import REPORT_FILE
from exporter.core.request import ExportRequest
from exporter.destinations.base import Destination

CREDENTIALS_SETTING = "EXPORTER_GCS_CREDENTIALS"


def storage_client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"), credentials=AnonymousCredentials()
        )
    key_file = os.environ.get(CREDENTIALS_SETTING)
    if key_file:
        return storage.Client.from_service_account_json(key_file)
    return storage.Client()


def split_uri(uri: str) -> tuple[str, str]:
    """gs://bucket/some/dir -> ("bucket", "some/dir") without leading or trailing slashes."""
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def gcs_error(error: Exception, doing: str) -> ExportError:
    from google.api_core import exceptions

    if isinstance(error, exceptions.NotFound):
        return ExportError(Code.NOT_FOUND, f"{doing}: {error.message if hasattr(error, 'message') else error}")
    if isinstance(error, (exceptions.Forbidden, exceptions.Unauthorized)):
        return ExportError(Code.PERMISSION_DENIED, f"{doing}: {error}")
    if isinstance(error, (exceptions.ServiceUnavailable, exceptions.TooManyRequests, ConnectionError)):
        return ExportError(Code.UNAVAILABLE, f"{doing}: {error}")
    return ExportError(Code.INTERNAL, f"{doing}: {type(error).__name__}: {error}")


class GcsDestination(Destination):
    """A gs://bucket/dir prefix; the export is built in a local folder, then published."""

    def __init__(self, uri: str):
        self.bucket_name, self.prefix = split_uri(uri)
        self._uri = uri.rstrip("/")
        self._staging_prefix: str | None = None

    @classmethod
    def from_request(cls, request: ExportRequest) -> GcsDestination:
        return cls(request.destination)

    @property
    def uri(self) -> str:
        return self._uri

    def _bucket(self):
        from google.api_core import exceptions

        client = storage_client()
        try:
            return client.get_bucket(self.bucket_name)
        except exceptions.GoogleAPICallError as error:
            raise gcs_error(error, f"bucket gs://{self.bucket_name}") from None

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def stage(self, final_name: str) -> Path:
        bucket = self._bucket()  # a missing bucket or no access is an error before any work
        if next(iter(bucket.list_blobs(prefix=self._key(final_name) + "/", max_results=1)), None):
            raise ExportError(Code.ALREADY_EXISTS, f"{self.uri}/{final_name} already exists")
        return Path(tempfile.mkdtemp(prefix=f"{final_name}."))

    def publish(self, staging: Path, final_name: str, report: dict) -> str:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY

        bucket = self._bucket()
        self._staging_prefix = self._key(f".{final_name}.{secrets.token_hex(4)}.partial")
        files = sorted(
            (p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name == REPORT_FILE, str(p))
        )  # the report last: the marker
        copied = []
        try:
            staged = []
            for path in files:
                blob = bucket.blob(f"{self._staging_prefix}/{path.relative_to(staging).as_posix()}")
                blob.upload_from_filename(str(path), retry=DEFAULT_RETRY, if_generation_match=0)
                staged.append((blob, path))
            for blob, path in staged:
                name = self._key(final_name, path.relative_to(staging).as_posix())
                copied.append(bucket.copy_blob(blob, bucket, name, retry=DEFAULT_RETRY))
        except (exceptions.GoogleAPICallError, OSError) as error:
            for blob in copied:
                _delete_quietly(blob)
            raise gcs_error(error, f"publishing to {self.uri}") from None
        finally:
            self._delete_staging(bucket)
        return f"{self.uri}/{final_name}"

    def find_published(self, final_name: str) -> tuple[str, dict] | None:
        """The export under `final_name` and its report (copied last: present means complete)."""
        from google.api_core import exceptions

        try:
            data = self._bucket().blob(self._key(final_name, REPORT_FILE)).download_as_bytes()
            return f"{self.uri}/{final_name}", json.loads(data)
        except exceptions.NotFound:
            return None
        except ValueError:
            return None

    def _delete_staging(self, bucket) -> None:
        if self._staging_prefix:
            for blob in bucket.list_blobs(prefix=self._staging_prefix + "/"):
                _delete_quietly(blob)
            self._staging_prefix = None


def _delete_quietly(blob) -> None:
    from google.api_core import exceptions

    try:
        blob.delete()
    except exceptions.NotFound:
        pass


def download_prefix(uri: str, target: Path) -> Path:
    """Every object under gs://bucket/prefix/ into `target` (a model folder to import)."""
    from google.api_core import exceptions

    bucket_name, prefix = split_uri(uri)
    client = storage_client()
    try:
        blobs = list(client.list_blobs(bucket_name, prefix=prefix + "/" if prefix else ""))
        if not blobs:
            raise ExportError(Code.NOT_FOUND, f"no objects under {uri}")
        for blob in blobs:
            relative = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
            if not relative or relative.endswith("/"):
                continue
            parts = relative.split("/")
            if any(part in ("", ".", "..") for part in parts):  # an object name may climb: refuse it
                raise ExportError(
                    Code.INVALID_ARGUMENT, f"object {blob.name!r} under {uri} is not a plain relative path"
                )
            path = target.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(path))
    except exceptions.GoogleAPICallError as error:
        raise gcs_error(error, f"reading {uri}") from None
    return target
