"""Atomic file and directory writes: a temporary name, fsync, then rename.

A reader (or a resumed run after SIGKILL) sees either the old file or the complete new one,
never a half-written one. A full disk is a one-line :class:`DiskFullError` (the temporary file is
removed, the old file kept), and an output path that is a file where a folder is wanted is a
one-line error before anything is written (:func:`check_output_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from genpix.errors import GenpixError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(GenpixError):
    """No space left on the device (or over quota) while writing a file."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk is full: an OSError (Pillow, json, torch) or safetensors'
    own error, whose message carries the OS error code."""
    if isinstance(error, OSError):
        return error.errno in DISK_FULL
    text = str(error)
    return "No space left on device" in text or "StorageFull" in text or "QuotaExceeded" in text


@contextlib.contextmanager
def disk_full_is_an_error(what: str | Path) -> Iterator[None]:
    """Turn a full disk inside the block into a one-line DiskFullError naming ``what``."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise DiskFullError(f"no space left on the device while writing {what}") from None


def check_output_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder to write into: it may be missing or a folder, not a file (nor under one)."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise GenpixError(f"{what} {path}: {folder} is a file, not a folder; choose a folder")
            break
    return path


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (the rename itself) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, fsync the result, and rename it onto ``path``."""
    path = Path(path)
    check_output_folder(path.parent, "writing")
    if path.is_dir():
        raise GenpixError(f"{path} is a folder; a file is to be written there")
    with disk_full_is_an_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        # O_EXCL as mkstemp, but mode 0666 minus the umask (a new file's usual mode) instead of 0600
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            write(tmp_path)
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
            fsync_dir(path.parent)
        finally:
            tmp_path.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it is fsynced and renamed to ``path``.

    An existing ``path`` is replaced. On error the temporary directory is removed.
    """
    path = Path(path)
    check_output_folder(path, "writing")
    with disk_full_is_an_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with disk_full_is_an_error(path):
            yield tmp
            _commit_directory(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit_directory(tmp: Path, path: Path) -> None:
    """fsync every file of ``tmp`` and rename it onto ``path`` (replacing an existing one)."""
    for child in tmp.iterdir():
        with open(child, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(tmp)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    fsync_dir(path.parent)
