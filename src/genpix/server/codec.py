"""Pictures in and out of the API: base64 (or data: URL) <-> PIL, PNGs that carry their infotext."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from genpix.io.images import INFOTEXT_KEY
from genpix.server.errors import ApiError
from genpix.server.schemas import MAX_SIDE


def decode_image(text: str, what: str = "image") -> Image.Image:
    """Raw base64 or a ``data:image/...;base64,`` URL -> a loaded PIL image; bad input is a 400."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{what} is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if max(width, height) > MAX_SIDE:
            raise ApiError(f"{what} is {width}x{height}; the largest side allowed is {MAX_SIDE}", 413)
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as error:
        raise ApiError(f"{what} is not a readable image ({type(error).__name__})") from None
    return image


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
