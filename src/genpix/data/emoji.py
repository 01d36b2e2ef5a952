"""`emoji`: every single-codepoint emoji of Noto Color Emoji, rendered on white, captioned with its Unicode name."""

from __future__ import annotations

import os
import tempfile
import unicodedata
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .dataset import DataError, ImageDataset, Split, make_dataset, split_indices
from .download import default_cache_dir
from .transforms import resize_square

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")  # Debian fonts-noto-color-emoji
UNICODE_DATA = Path("/usr/share/unicode/UnicodeData.txt")  # Debian unicode-data: names newer than Python's
EMOJI_RANGES = ((0x2600, 0x27C0), (0x1F300, 0x1FB00))  # Miscellaneous Symbols, Dingbats; the emoji planes
EMOJI_FONT_SIZE = 109  # the only size of Noto Color Emoji's CBDT bitmaps
EMOJI_NATIVE_SIZE = 64
_CACHE_VERSION = 1


@lru_cache(maxsize=4)
def _unicode_data_names(path: Path) -> dict[int, str]:
    """Codepoint -> name from a UnicodeData.txt (empty when the file is missing)."""
    names = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split(";")
            if len(fields) > 1 and not fields[1].startswith("<"):
                names[int(fields[0], 16)] = fields[1]
    return names


def emoji_name(codepoint: int) -> str | None:
    """The Unicode name of `codepoint` (Python's unicodedata, else Debian's UnicodeData.txt), or None."""
    return unicodedata.name(chr(codepoint), None) or _unicode_data_names(UNICODE_DATA).get(codepoint)


def _open_font(font_path: Path) -> ImageFont.FreeTypeFont:
    if not font_path.is_file():
        raise DataError(f"the emoji dataset needs the Noto Color Emoji font at {font_path}: "
                        "run `apt install fonts-noto-color-emoji`")
    try:
        return ImageFont.truetype(str(font_path), size=EMOJI_FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)
    except OSError as exc:
        raise DataError(f"cannot load the emoji font {font_path} at size {EMOJI_FONT_SIZE}: {exc}") from exc


def render_emoji(
    font_path: str | Path = EMOJI_FONT, size: int = EMOJI_NATIVE_SIZE
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Render every named single-codepoint emoji in EMOJI_RANGES that the font has a glyph for.

    Returns:
        codepoints int64 `(N,)` ascending, images uint8 `(N, 3, size, size)` (glyph padded to a white
        square, then resized with Lanczos), and the lower-cased Unicode names (e.g. "grinning face").
    """
    font = _open_font(Path(font_path))
    codepoints, images, names = [], [], []
    for start, stop in EMOJI_RANGES:
        for codepoint in range(start, stop):
            text = chr(codepoint)
            left, top, right, bottom = font.getbbox(text)
            name = emoji_name(codepoint)
            if right <= left or bottom <= top or not name:  # no glyph (empty box) or no name
                continue
            side = max(right - left, bottom - top)
            canvas = Image.new("RGB", (side, side), (255, 255, 255))
            origin = ((side - (right - left)) // 2 - left, (side - (bottom - top)) // 2 - top)
            ImageDraw.Draw(canvas).text(origin, text, font=font, embedded_color=True)
            codepoints.append(codepoint)
            images.append(np.asarray(resize_square(canvas, size)).transpose(2, 0, 1))
            names.append(name.lower())
    if not images:
        raise DataError(f"the font {font_path} has no emoji glyphs in the emoji blocks")
    return np.array(codepoints, dtype=np.int64), np.stack(images), names


def _font_key(font_path: Path) -> str:
    stat = font_path.stat()
    return f"{_CACHE_VERSION}:{font_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _read_cache(path: Path, key: str) -> tuple[np.ndarray, list[str]] | None:
    """(images, names) from a cache file written for this font, or None when absent, stale or corrupt."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["key"]) != key:
                return None
            return cache["images"], [str(name) for name in cache["names"]]
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(path: Path, key: str, codepoints: np.ndarray, images: np.ndarray, names: list[str]) -> None:
    """Write the cache atomically (temporary file, then rename); warn and go on when that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, key=np.array(key), codepoints=codepoints, images=images, names=np.array(names))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"cannot write the emoji cache {path}: {exc}", stacklevel=3)


def load_emoji(
    split: Split = "train",
    *,
    image_size: int = EMOJI_NATIVE_SIZE,
    limit: int | None = None,
    font_path: str | Path = EMOJI_FONT,
    cache_dir: str | Path | None = None,
) -> ImageDataset:
    """The emoji as uint8 `(N, 3, image_size, image_size)` on white, captions = Unicode names, no labels.

    Renders once per size and caches the result in `cache_dir/emoji-SIZE.npz` (default ~/.cache/genpix),
    re-rendering when the font file changes. The split takes every 10th emoji in codepoint order as test.
    """
    font_path = Path(font_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"emoji-{image_size}.npz"
    _open_font(font_path)  # a clear error when the font is missing, cache or not
    key = _font_key(font_path)
    cached = _read_cache(cache_file, key)
    if cached is None:
        codepoints, images, names = render_emoji(font_path, image_size)
        _write_cache(cache_file, key, codepoints, images, names)
    else:
        images, names = cached
    index = split_indices(len(images), split)[:limit]
    return make_dataset(images[index], None, None, tuple(names[i] for i in index.tolist()), "emoji", split)
