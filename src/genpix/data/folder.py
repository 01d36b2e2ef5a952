"""A folder of image files as a dataset: recursive scan, robust decoding, sub-folder classes, captions (sidecar
.txt files or a metadata.jsonl)."""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dataset import DataError, ImageDataset, Split, make_dataset, split_indices
from .transforms import (
    crop_to_aspect_ratio, is_grayscale_mode, normalise_mode, pil_to_chw, resize_square, to_pil_channels,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
FOLDER_NATIVE_SIZE = 64
# Pillow's own default decompression-bomb limit (about 89.5 megapixels); larger images are skipped.
MAX_IMAGE_PIXELS = 89_478_485
MIN_IMAGE_SIDE = 2
# What Pillow raises on broken files (truncated data, bad headers, bombs, text named .png, ...).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error,
                  Image.DecompressionBombError, Image.DecompressionBombWarning)


class UnreadableImageWarning(UserWarning):
    """Some files in an image folder could not be used and were skipped."""


class _Unreadable(Exception):
    """A file that cannot be used; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def list_image_files(root: Path) -> list[Path]:
    """Image files under `root` (recursive, extensions case-insensitive, hidden names skipped),
    sorted by relative path."""
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found += [Path(folder) / name for name in files
                  if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found, key=lambda path: path.relative_to(root).parts)


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _Unreadable(f"too big, {width}x{height}")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise _Unreadable(f"too small, {width}x{height}")


def _probe(path: Path) -> str:
    """The Pillow mode of `path` from its header alone; raises _Unreadable."""
    try:
        with Image.open(path) as image:
            _check_size(image)
            return "LA" if image.mode == "L" and "transparency" in image.info else image.mode
    except _DECODE_ERRORS as exc:
        raise _Unreadable(_reason(exc)) from exc


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode, centre-crop to square, convert and resize one file to uint8 `(channels, size, size)`."""
    try:
        with Image.open(path) as image:
            _check_size(image)
            image.draft(None, (size, size))  # JPEG: decode at a reduced scale that is still >= size
            image.load()
            image = ImageOps.exif_transpose(image)
            image = normalise_mode(crop_to_aspect_ratio(image, 1.0))
            return pil_to_chw(resize_square(to_pil_channels(image, channels), size))
    except _DECODE_ERRORS as exc:
        raise _Unreadable(_reason(exc)) from exc


def _reason(exc: BaseException) -> str:
    """A few words on why Pillow could not use a file."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "too big"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:80]


def _labels(root: Path, files: list[Path]) -> tuple[np.ndarray | None, tuple[str, ...] | None]:
    """Class index per file when every file lies under a first-level sub-folder (its class), else None."""
    tops = [path.relative_to(root).parts for path in files]
    if not tops or any(len(parts) < 2 for parts in tops):
        return None, None
    class_names = tuple(sorted({parts[0] for parts in tops}))
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[parts[0]] for parts in tops], dtype=np.int64), class_names


METADATA_FILE = "metadata.jsonl"  # Hugging Face's imagefolder convention: {"file_name": ..., "text": ...} a line
CAPTION_KEYS = ("text", "caption")  # the caption's key in a metadata line, in order of preference


def _captions(root: Path, files: list[Path]) -> list[str] | None:
    """Each file's caption: its line of ``root/metadata.jsonl``, else its sidecar `NAME.txt`, else "";
    None when no file has one."""
    listed = _metadata_captions(root)
    sidecars = [path.with_suffix(".txt") for path in files]
    if not listed and not any(sidecar.is_file() for sidecar in sidecars):
        return None
    return [listed.get(path.relative_to(root).as_posix(),
                       s.read_text(encoding="utf-8", errors="replace").strip() if s.is_file() else "")
            for path, s in zip(files, sidecars)]


def _metadata_captions(root: Path) -> dict[str, str]:
    """file_name (relative to root, '/'-separated) -> caption, from ``root/metadata.jsonl`` if it exists."""
    path = root / METADATA_FILE
    if not path.is_file():
        return {}
    captions = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise DataError(f"{path}:{number}: each line needs a \"file_name\" string")
        text = next((row[key] for key in CAPTION_KEYS if isinstance(row.get(key), str)), None)
        if text is None:
            raise DataError(f"{path}:{number}: no caption ({' or '.join(CAPTION_KEYS)}) for {row['file_name']}")
        captions[Path(row["file_name"]).as_posix().removeprefix("./")] = text.strip()
    return captions


def _describe(skipped: list[tuple[Path, str]], root: Path) -> str:
    """E.g. "2 files skipped: a.png (too small, 1x1), b.png (not a recognised image)", in path order."""
    skipped = sorted(skipped, key=lambda item: item[0].relative_to(root).parts)
    shown = ", ".join(f"{path.relative_to(root)} ({reason})" for path, reason in skipped[:3])
    more = ", ..." if len(skipped) > 3 else ""
    return f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped: {shown}{more}"


def load_folder(
    root: str | Path,
    split: Split = "train",
    *,
    image_size: int = FOLDER_NATIVE_SIZE,
    channels: int | None = None,
    limit: int | None = None,
) -> ImageDataset:
    """Load every image under `root` as uint8 `(N, C, image_size, image_size)` in [0, 255].

    Each image is centre-cropped to a square (the largest undistorted crop), converted (alpha over
    white, 16-bit scaled to 8-bit) and resized. `channels` None means 1 when every image is grayscale,
    else 3. Files that cannot be used (corrupt, truncated, not an image, over MAX_IMAGE_PIXELS, under
    2x2) are skipped with one UnreadableImageWarning. Labels: when every image lies in a first-level
    sub-folder, the sub-folders (sorted) are the classes; otherwise None. Captions come from sidecar
    `NAME.txt` files. The split takes every 10th readable file in sorted relative-path order as test.

    Raises DataError when the folder holds no image file or none is readable.
    """
    root = Path(root).expanduser()
    files = list_image_files(root)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {root}")
    skipped: list[tuple[Path, str]] = []
    modes: list[str] = []
    readable: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for path in files:
            try:
                modes.append(_probe(path))
                readable.append(path)
            except _Unreadable as exc:
                skipped.append((path, exc.reason))
        if channels is None:
            channels = 1 if modes and all(is_grayscale_mode(mode) for mode in modes) else 3
        labels, class_names = _labels(root, readable)
        captions = _captions(root, readable)
        kept, arrays = [], []
        for i in split_indices(len(readable), split).tolist():
            if limit is not None and len(arrays) >= limit:
                break
            try:
                arrays.append(_decode(readable[i], image_size, channels))
                kept.append(i)
            except _Unreadable as exc:
                skipped.append((readable[i], exc.reason))
    if not arrays and skipped:
        raise DataError(f"no readable images in {root} ({_describe(skipped, root)})")
    if skipped:
        warnings.warn(f"{root}: {_describe(skipped, root)}", UnreadableImageWarning, stacklevel=2)
    images = np.stack(arrays) if arrays else np.zeros((0, channels, image_size, image_size), np.uint8)
    return make_dataset(
        images,
        None if labels is None else labels[kept],
        class_names,
        None if captions is None else tuple(captions[i] for i in kept),
        str(root),
        split,
    )


def load_image_file(path: str | Path, *, image_size: int, channels: int) -> np.ndarray:
    """One image file as a model input: uint8 ``(channels, image_size, image_size)``.

    Cropped to square and resized exactly as folder datasets are; DataError if unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        return _decode(path, image_size, channels)
    except _Unreadable as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
