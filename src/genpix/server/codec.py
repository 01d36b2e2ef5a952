"""Pictures in and out of the API: base64 (or data: URL) <-> PIL, PNGs that carry their infotext.

Only PNG, JPEG, WebP, BMP and GIF are opened (never EPS, which would run Ghostscript, nor any other
format Pillow knows). A picture's size is read from its header and checked before its pixels are
decoded, for each picture alone and for all of a request's pictures together.
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from genpix.io.images import INFOTEXT_KEY
from genpix.server.errors import ApiError
from genpix.server.schemas import MAX_SIDE

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # what a client may send
# what Pillow raises on a broken file: a truncated stream, a bomb, a text chunk over its limit (ValueError)
UNREADABLE = (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError,
              EOFError, TypeError, IndexError, KeyError, ZeroDivisionError)


def open_image(text: str, what: str = "image") -> Image.Image:
    """Raw base64 or a ``data:image/...;base64,`` URL -> a PIL image whose header is read and checked
    (format, side) but whose pixels are not decoded yet; bad input is a 400, a too large one a 413."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{what} is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UNREADABLE as error:
        raise ApiError(f"{what} is not a readable image ({type(error).__name__}); "
                       f"send {', '.join(FORMATS)}") from None
    width, height = image.size
    if max(width, height) > MAX_SIDE:
        raise ApiError(f"{what} is {width}x{height}; the largest side allowed is {MAX_SIDE}", 413)
    return image


def load_image(image: Image.Image, what: str = "image") -> Image.Image:
    """Decode the pixels of an image from :func:`open_image`."""
    try:
        image.load()
    except UNREADABLE as error:
        raise ApiError(f"{what} is not a readable image ({type(error).__name__})") from None
    return image


def decode_image(text: str, what: str = "image") -> Image.Image:
    """:func:`open_image` then :func:`load_image`: a loaded PIL image."""
    return load_image(open_image(text, what), what)


def encode_png(image: Image.Image, infotext: str | None = None) -> str:
    """A PNG as base64 (no data: prefix), with ``infotext`` in its ``parameters`` text chunk."""
    meta = PngImagePlugin.PngInfo()
    if infotext:
        meta.add_text(INFOTEXT_KEY, infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def text_chunks(image: Image.Image) -> dict[str, str]:
    """The image's text metadata (PNG tEXt/iTXt chunks), strings only."""
    return {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
