"""Reader for the IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), gzip or raw."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .dataset import DataError

# Third magic byte -> element type (big-endian, as the format prescribes).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path, *, ndim: int | None = None, count: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array of shape `dims`.

    Args:
        path: the file, e.g. `train-images-idx3-ubyte.gz` (magic 2051: uint8, 3 dims) or
            `train-labels-idx1-ubyte` (magic 2049: uint8, 1 dim). Gzip is detected from the content.
        ndim: the number of dimensions expected (3 for images, 1 for labels), or None for any.
        count: read only the first `count` items along the first axis (None: all, and check that
            the file ends exactly after them).

    Returns:
        The array, e.g. uint8 `(60000, 28, 28)` for images or `(60000,)` for labels.

    Raises:
        DataError naming the file when it is missing, has a bad magic number or dimensions,
        or is corrupt or truncated.
    """
    path = Path(path)
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
        with (gzip.open(path, "rb") if compressed else path.open("rb")) as stream:
            return _read_stream(stream, path, ndim, count)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file, it is corrupt or truncated ({exc})") from exc


def _read_stream(stream: BinaryIO, path: Path, ndim: int | None, count: int | None) -> np.ndarray:
    header = stream.read(4)
    if len(header) < 4 or header[:2] != b"\0\0" or header[2] not in _IDX_DTYPES or header[3] == 0:
        magic = int.from_bytes(header.ljust(4, b"\0"), "big")
        raise DataError(f"{path}: not an IDX file (magic number {magic}, expected e.g. 2051 or 2049)")
    dtype, file_ndim = _IDX_DTYPES[header[2]], header[3]
    if ndim is not None and file_ndim != ndim:
        magic = int.from_bytes(header, "big")
        raise DataError(f"{path}: IDX file has {file_ndim} dimensions (magic {magic}), expected {ndim}")
    dims_bytes = stream.read(4 * file_ndim)
    if len(dims_bytes) < 4 * file_ndim:
        raise DataError(f"{path}: IDX file is truncated inside its header")
    dims = list(struct.unpack(f">{file_ndim}I", dims_bytes))
    if count is not None:
        dims[0] = min(dims[0], count)
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    data = stream.read(expected)
    if len(data) < expected:
        raise DataError(f"{path}: IDX file is truncated ({len(data)} of {expected} data bytes)")
    if count is None and stream.read(1):
        raise DataError(f"{path}: IDX file has extra bytes after its {expected} data bytes")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)
