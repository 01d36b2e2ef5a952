"""Download one file over HTTP(S) or file://, check its MD5 (or SHA-256), and move it into place atomically."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .dataset import DataError

DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class DownloadError(DataError):
    """The file could not be fetched (offline, unreachable host, HTTP error, timeout)."""


def default_cache_dir() -> Path:
    """Where genpix keeps downloads and rendered caches: `$XDG_CACHE_HOME/genpix` or `~/.cache/genpix`."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "genpix"


def download(url: str, dest: str | Path, md5: str, *, timeout: float = DOWNLOAD_TIMEOUT_S,
             algorithm: str = "md5") -> Path:
    """Fetch `url` into `dest`, verifying its MD5 hex digest; return `dest`.

    With `algorithm="sha256"`, `md5` is instead the start (at least 8 hex digits) of the SHA-256 hex
    digest, as in torch hub file names.

    The bytes go to a temporary file beside `dest`, which is renamed onto `dest` only when the
    checksum matches, so `dest` never holds a partial or wrong file.

    Raises:
        DownloadError: the URL cannot be reached or read (the reason is in the message).
        DataError: the checksum does not match (the temporary file is deleted) or `dest` cannot be written.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"cannot write {dest}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        digest = _fetch(url, fd, timeout, algorithm)
        expected = md5.lower()
        if digest != expected and not (algorithm != "md5" and len(expected) >= 8 and digest.startswith(expected)):
            raise DataError(f"checksum mismatch for {url}: {algorithm.upper()} {digest}, expected {md5}; "
                            f"the download was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(url: str, fd: int, timeout: float, algorithm: str = "md5") -> str:
    """Stream `url` into the open file descriptor `fd` (closing it); return its hex digest."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with os.fdopen(fd, "wb") as out:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.URLError as exc:
            raise DownloadError(f"cannot download {url}: {exc.reason}") from exc
        except (http.client.HTTPException, TimeoutError, ConnectionError, ValueError) as exc:
            raise DownloadError(f"cannot download {url}: {exc or type(exc).__name__}") from exc
        except OSError as exc:
            raise DataError(f"cannot save {url}: {exc}") from exc
    return digest.hexdigest()
