"""One private copy of the model: what is checked is what loads.

A SavedModel is a program, and checking its operations is worth nothing if TensorFlow then reads
another file: a model folder whose ``saved_model.pb`` is swapped between the check and the load
would run whatever the swapped file holds. So an export (CLI, Python API) first copies the model
(a folder or a Keras file) once into a private folder (mode 0700, the running user's alone), and
the confinement check, the op policy and TensorFlow all read that copy. The service copies an
imported model into its own store the same way.

The copy never follows a link: every folder and file is opened relative to its already-open
parent with ``O_NOFOLLOW``, so a folder or file swapped for a link while the copy runs is refused.
A file with more than one hard link is refused: a hard link can make any file of the disk that
the running user may read (a credentials file) part of the model folder, with no link to see.
The bytes copied are bounded by ``EXPORTER_MAX_MODEL_BYTES``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exporter.core.errors import Code, ExportError
from exporter.core.keras_files import is_keras_file
from exporter.core.limit_settings import whole_number_setting

MAX_BYTES_SETTING = "EXPORTER_MAX_MODEL_BYTES"
# 16 GiB: a model folder is a SavedModel (the largest keras.applications classifier, VGG19, is
# 549 MB of weights) beside its images; an image folder larger than this belongs outside the model
# folder, given with --images, which is read in place.
DEFAULT_MAX_BYTES = 16 << 30
_CHUNK = 1 << 20


def max_model_bytes() -> int:
    return whole_number_setting(MAX_BYTES_SETTING, DEFAULT_MAX_BYTES, "bytes")


@contextmanager
def model_snapshot(model: str | Path) -> Iterator[Path]:
    """A private copy of the model folder or Keras file `model`, under the same name, removed when
    the block ends."""
    source = Path(model)
    if not source.exists():
        what = "model file" if is_keras_file(source) else "model folder"
        raise ExportError(Code.NOT_FOUND, f"{what} {str(model)!r} does not exist")
    if not source.is_dir() and not is_keras_file(source):
        raise ExportError(
            Code.INVALID_ARGUMENT,
            f"model {str(model)!r} is a file the engine does not read: give a model folder, a SavedModel "
            "folder, or a Keras .keras/.h5 file",
        )
    # The folder the user named may itself be a link (a "latest" link to a model version): that
    # one is followed, once, here; nothing under it is.
    resolved = source.resolve()
    with tempfile.TemporaryDirectory(prefix="model-snapshot-") as scratch:  # 0700
        target = Path(scratch) / resolved.name
        copy_without_following(resolved, target)
        yield target


def copy_without_following(source: Path, target: Path) -> None:
    """Copy the folder (or single file) `source` to `target`, never following a link: links are
    copied as links (relative ones only: an absolute link would lead out of the copy), and every
    folder and file is opened relative to its already-open parent without following a link, so
    that a folder or file swapped for a link while the copy runs is refused, not followed out of
    the model folder. Files with other hard links are refused; the bytes copied are bounded."""
    budget = _Budget(max_model_bytes())
    no_follow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        top = os.open(source, no_follow | os.O_NONBLOCK)
    except OSError as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"cannot read the model: {error.strerror}") from None
    try:
        if stat.S_ISDIR(os.fstat(top).st_mode):
            _copy_folder(top, target, "", no_follow, budget)
        else:
            _copy_file(top, target, source.name, budget)
    finally:
        os.close(top)


class _Budget:
    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise ExportError(
                Code.RESOURCE_EXHAUSTED,
                f"the model is larger than {self.limit:,} bytes ({MAX_BYTES_SETTING} raises the limit; image "
                "folders can be given with --images instead, which are read in place)",
            )


def _copy_folder(folder_fd: int, target: Path, relative: str, no_follow: int, budget: _Budget) -> None:
    target.mkdir()
    with os.scandir(folder_fd) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        where = f"{relative}{name}"
        try:
            info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                link = os.readlink(name, dir_fd=folder_fd)
                if os.path.isabs(link):
                    raise ExportError(
                        Code.INVALID_ARGUMENT,
                        f"{where} is a link by absolute path: the model folder is read from a copy of "
                        "its own, so a link in it must be relative",
                    )
                os.symlink(link, target / name)
            elif stat.S_ISDIR(info.st_mode):
                child = os.open(name, no_follow | os.O_DIRECTORY, dir_fd=folder_fd)
                try:
                    _copy_folder(child, target / name, f"{where}/", no_follow, budget)
                finally:
                    os.close(child)
            else:
                # O_NONBLOCK: a pipe swapped in opens at once (and is refused) instead of blocking.
                file_fd = os.open(name, no_follow | os.O_NONBLOCK, dir_fd=folder_fd)
                try:
                    _copy_file(file_fd, target / name, where, budget)
                finally:
                    os.close(file_fd)
        except OSError as error:
            # ELOOP or ENOTDIR: swapped for a link since it was listed; never followed.
            raise ExportError(
                Code.INVALID_ARGUMENT, f"cannot copy {where} from the model folder: {error.strerror}"
            ) from None


def _copy_file(file_fd: int, target: Path, where: str, budget: _Budget) -> None:
    """Copy the open file `file_fd` (checked on the descriptor itself: what was opened is what is
    read) to `target`, a new file."""
    info = os.fstat(file_fd)
    if not stat.S_ISREG(info.st_mode):
        raise ExportError(Code.INVALID_ARGUMENT, f"{where} is neither a file nor a folder")
    if info.st_nlink > 1:
        raise ExportError(
            Code.INVALID_ARGUMENT,
            f"{where} has {info.st_nlink} hard links: a model file must be a file of its own (a hard link "
            "can make any file of the disk part of the folder); copy it instead of linking it",
        )
    with open(target, "xb") as copy:
        while chunk := os.read(file_fd, _CHUNK):
            budget.spend(len(chunk))
            copy.write(chunk)
