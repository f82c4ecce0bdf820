"""A local folder destination: a plain path or ``file:///abs``.

The export is staged in a hidden sibling folder on the same file system and published with one
``rename``, so the final ``model-export-...`` name holds a complete export or nothing.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from exporter.core.errors import Code, ExportError, os_error
from exporter.core.report import REPORT_FILE
from exporter.core.request import ExportRequest
from exporter.destinations.base import Destination


def held_path(fd: int) -> Path:
    """A path to the folder open as `fd` in this process, usable by this process and the processes
    it starts under the same user: the kernel resolves it through the descriptor, not by name."""
    return Path(f"/proc/{os.getpid()}/fd/{fd}")


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def local_path(prefix: str) -> Path | None:
    """The folder a local ``outputUriPrefix`` (a path or file:///abs) names; None for gs://."""
    if prefix.startswith("gs://"):
        return None
    if prefix.startswith("file://"):
        prefix = unquote(urlparse(prefix).path)
    return Path(prefix).expanduser().resolve()


# Opening a folder without following a link: O_NOFOLLOW makes open() of a link fail (ELOOP),
# O_DIRECTORY makes open() of anything but a folder fail (ENOTDIR). O_PATH (Linux) needs only
# search permission on the folder, as a path-based mkdir would.
_FOLDER = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_NO_FOLLOW = _FOLDER | os.O_NOFOLLOW
MAX_REPORT_BYTES = 16 << 20


class LocalDestination(Destination):
    """A folder on this machine's file system.

    Links are never followed below the place the walk starts: the allowed output root that holds
    the folder (``output_roots``, the service's allow-list), else ``/`` for a path that was
    resolved once when the destination was made (the command line). Each folder on the way is
    opened relative to its already-open parent with ``O_NOFOLLOW | O_DIRECTORY`` and made with
    ``mkdir(dir_fd=...)``, so a folder swapped for a link, even between a check and its use, is
    refused (``ELOOP``/``ENOTDIR``) instead of followed. The destination folder and the staging
    folder stay open from ``stage`` to ``discard``: the export is written through the staging
    folder's descriptor, and published, kept (a failed attempt's report) or removed relative to the
    destination folder's, so no write follows a folder swapped on the way after the walk.
    ``publish`` walks again and refuses when the walk no longer reaches the folder held open.
    """

    options = frozenset({"output_roots"})

    def __init__(self, folder: Path, output_roots: list[Path] | None = None):
        self.folder = folder
        self.output_roots = None if output_roots is None else [Path(root) for root in output_roots]
        # Held from stage to discard: the destination folder, the staging folder's name in it,
        # and the folders handed out as held paths: their descriptors and names.
        self._held: int | None = None
        self._staging_name: str | None = None
        self._names: dict[int, str] = {}

    @classmethod
    def from_request(cls, request: ExportRequest, output_roots: list[str | Path] | None = None) -> LocalDestination:
        if output_roots is None:
            folder = local_path(request.destination)
            assert folder is not None  # chosen by scheme: never gs://
            return cls(folder)
        # Under an allow-list the path is taken as written (made absolute, "." and ".." folded),
        # never resolved: a link in it is refused by the walk, not followed to where it leads.
        prefix = request.destination
        if prefix.startswith("file://"):
            prefix = unquote(urlparse(prefix).path)
        return cls(Path(os.path.abspath(Path(prefix).expanduser())), [Path(root) for root in output_roots])

    @property
    def uri(self) -> str:
        return str(self.folder)

    def _start(self) -> tuple[Path, tuple[str, ...]]:
        """Where the walk starts (trusted), and the folder's parts below it."""
        if self.output_roots is None:
            return Path("/"), self.folder.parts[1:]
        for root in self.output_roots:
            if self.folder == root or root in self.folder.parents:
                return root, self.folder.relative_to(root).parts
        raise ExportError(
            Code.INVALID_ARGUMENT,
            f"the destination {str(self.folder)!r} is outside the folders exports may be written to",
        )

    def _open_folder(self, create: bool, parts: tuple[str, ...] | None = None) -> int:
        """The destination folder (or the folder `parts` below the walk's start), open, reached
        without following a link (made when `create`)."""
        start, all_parts = self._start()
        parts = all_parts if parts is None else parts
        try:
            fd = os.open(start, _FOLDER)
        except OSError as error:
            raise os_error(error, f"cannot write to the destination {str(self.folder)!r}") from None
        try:
            for part in parts:
                if create:
                    try:
                        os.mkdir(part, dir_fd=fd)
                    except FileExistsError:
                        pass
                child = os.open(part, _NO_FOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
            return fd
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ExportError(
                    Code.FAILED_PRECONDITION,
                    f"cannot write to the destination {str(self.folder)!r}: a folder on its way is a link or a "
                    "file, and links are not followed",
                ) from None
            raise os_error(error, f"cannot write to the destination {str(self.folder)!r}") from None

    def check(self) -> None:
        """The destination folder can be made and written, found without making anything: a probe
        folder is made and removed in the folder, or in its nearest existing parent when the folder
        does not exist yet, since only doing it tells (a read-only mount, an ACL, a quota)."""
        start, parts = self._start()
        existing = len(parts)
        while existing and not os.path.lexists(start.joinpath(*parts[:existing])):
            existing -= 1
        fd = self._open_folder(create=False, parts=parts[:existing])
        probe = f".write-check-{secrets.token_hex(4)}"
        try:
            os.mkdir(probe, dir_fd=fd)
            os.rmdir(probe, dir_fd=fd)
        except OSError as error:  # said without the probe's name, which is not the user's
            raise os_error(
                OSError(error.errno, error.strerror), f"cannot write to the destination {str(self.folder)!r}"
            ) from None
        finally:
            os.close(fd)

    def stage(self, final_name: str) -> Path:
        """Make the destination folder and an empty staging folder inside it; both are held open
        until ``discard``, and the path returned reaches the staging folder through its descriptor
        (``/proc/<pid>/fd/<n>``), so that a folder on the way swapped for a link while the export
        runs cannot redirect a single write."""
        self._release()
        fd = self._open_folder(create=True)
        try:
            try:
                os.stat(final_name, dir_fd=fd, follow_symlinks=False)
                raise ExportError(Code.ALREADY_EXISTS, f"{self.folder / final_name} already exists")
            except FileNotFoundError:
                pass
            # mkdir (not mkdtemp, which makes it 0700) so the export gets the user's umask.
            name = f".{final_name}.{secrets.token_hex(4)}.partial"
            os.mkdir(name, dir_fd=fd)
            staging = os.open(name, _NO_FOLLOW, dir_fd=fd)
        except BaseException as error:
            os.close(fd)
            if isinstance(error, OSError):
                raise os_error(error, f"cannot write to the destination {str(self.folder)!r}") from None
            raise
        self._held, self._staging_name = fd, name
        self._names[staging] = name
        return held_path(staging)

    def shown(self, path: Path) -> Path:
        """The path a user knows for `path`, one that ``stage`` or ``keep_folder`` handed out."""
        for fd, name in self._names.items():
            held = held_path(fd)
            if path == held or held in path.parents:
                return self.folder / name / path.relative_to(held)
        return path

    def keep_folder(self, staging: Path, name: str) -> tuple[Path, Path]:
        """A folder `name` beside the staging folder, in the folder held since ``stage``."""
        if self._held is None:
            return super().keep_folder(staging, name)
        try:
            os.mkdir(name, dir_fd=self._held)
        except FileExistsError:
            pass
        fd = os.open(name, _NO_FOLLOW, dir_fd=self._held)
        self._names[fd] = name
        return held_path(fd), self.folder / name

    def replaced_error(self) -> ExportError | None:
        """FAILED_PRECONDITION when walking to the folder again (links not followed) no longer
        reaches the folder held open since ``stage``."""
        if self._held is None:
            return None
        try:
            fd = self._open_folder(create=False)
        except ExportError as error:
            return error if error.code is Code.FAILED_PRECONDITION else None
        try:
            if _identity(fd) == _identity(self._held):
                return None
        finally:
            os.close(fd)
        return ExportError(
            Code.FAILED_PRECONDITION,
            f"the destination {str(self.folder)!r} was replaced while the export ran; nothing was published",
        )

    def publish(self, staging: Path, final_name: str, report: dict) -> str:
        """Move the finished staging folder to its final name; return the export's location."""
        final = self.folder / final_name
        if self._held is None or self._staging_name is None:
            raise ExportError(Code.INTERNAL, "publish without a staging folder")
        # The folder is walked again, now: one swapped for another (or a link) since stage is
        # refused, since the export would land where the path no longer leads.
        replaced = self.replaced_error()
        if replaced is not None:
            raise replaced
        try:
            # Atomic within one file system; refuses a non-empty target. Relative to the folder
            # held since stage: no path is resolved again.
            os.rename(self._staging_name, final_name, src_dir_fd=self._held, dst_dir_fd=self._held)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise ExportError(Code.ALREADY_EXISTS, f"{final} already exists") from None
            raise os_error(error, "cannot publish the export") from None
        self._staging_name = None
        return str(final)

    def find_published(self, final_name: str) -> tuple[str, dict] | None:
        """The export folder `final_name` and its report, reached without following links (a
        published folder is complete: it appeared by one rename)."""
        try:
            fd = self._open_folder(create=False)
        except ExportError:
            return None
        try:
            export = os.open(final_name, _NO_FOLLOW, dir_fd=fd)
            try:
                report = os.open(REPORT_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=export)
            finally:
                os.close(export)
            with os.fdopen(report, "rb") as handle:
                return str(self.folder / final_name), json.loads(handle.read(MAX_REPORT_BYTES))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def discard(self, staging: Path) -> None:
        """Remove what is left of the staging folder (in the folder held since ``stage``; a staging
        folder named by an earlier process, in the folder reached without links) and let go of
        what ``stage`` held."""
        try:
            if self._held is not None:
                if self._staging_name is not None:
                    shutil.rmtree(self._staging_name, dir_fd=self._held, ignore_errors=True)
                return
            try:
                fd = self._open_folder(create=False)
            except ExportError:
                return  # no folder to clean, or one that is now a link: nothing of ours to remove there
            try:
                shutil.rmtree(staging.name, dir_fd=fd, ignore_errors=True)
            finally:
                os.close(fd)
        finally:
            self._release()

    def _release(self) -> None:
        for fd in [*self._names, *([self._held] if self._held is not None else [])]:
            os.close(fd)
        self._held, self._staging_name, self._names = None, None, {}
