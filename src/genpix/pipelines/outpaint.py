"""Outpainting as inpainting of a larger canvas, on pictures (shared by `genpix outpaint` and the
API's outpainting scripts).

1. :func:`extend_canvas`: the picture in the middle of a canvas grown by left/right/up/down pixels,
   the new border filled by stretching the picture's edge rows and columns outwards (numpy's "edge"
   padding; a simple stand-in for sd-webui's "fill" or outpainting mk2's matched noise, that gives
   the border the colours it continues), and the mask: white on the new border, black on the picture.
2. :func:`generation_size`: the size the model inpaints at: the canvas rounded to the pipeline's
   multiple of 8 where it takes any size, else the model's one size (the canvas is resized to it).
3. :func:`paste_back`: each result resized to the canvas and composited over it through the blurred
   mask, so the picture comes back pixel for pixel wherever the blurred mask is 0; a result the
   safety checks flagged (pipelines/safety.py) stays black all over.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from genpix.errors import GenpixError
from genpix.pipelines.masking import overlay, pictures_to_batch, prepare_mask
from genpix.pipelines.safety import black_out

DIRECTIONS = ("left", "right", "up", "down")
MAX_EXTEND = 2048


def extend_canvas(picture: Image.Image, left: int = 0, right: int = 0, up: int = 0,
                  down: int = 0) -> tuple[Image.Image, Image.Image]:
    """(canvas, mask L) for a picture of mode L or RGB grown by the given pixels on each side."""
    amounts = dict(zip(DIRECTIONS, (left, right, up, down)))
    for name, value in amounts.items():
        if not 0 <= value <= MAX_EXTEND or int(value) != value:
            raise GenpixError(f"--{name} must be a whole number of pixels from 0 to {MAX_EXTEND}, got {value}")
    if not any(amounts.values()):
        raise GenpixError("outpainting needs at least one of left, right, up, down above 0")
    pixels = np.asarray(picture)
    spread = ((up, down), (left, right)) + (((0, 0),) if pixels.ndim == 3 else ())
    canvas = Image.fromarray(np.pad(pixels, spread, mode="edge"), mode=picture.mode)
    mask = np.pad(np.zeros(pixels.shape[:2], dtype=np.uint8), spread[:2], constant_values=255)
    return canvas, Image.fromarray(mask, mode="L")


def generation_size(pipe, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) to generate a picture of ``size`` at: its own size rounded to the model's
    multiple (at least one multiple) for models that make any size, else the model's one size."""
    multiple = pipe.capabilities.size_multiple
    if multiple:
        return tuple(max(multiple, round(side / multiple) * multiple) for side in size)
    return pipe.capabilities.native_size


def paste_back(results: Sequence[Image.Image], canvas: Image.Image, mask: Image.Image,
               blur: int = 0, invert: bool = False, nsfw: Sequence[bool] | None = None) -> list[Image.Image]:
    """Each result resized to the canvas (Lanczos) and shown only where the mask, inverted and
    blurred as the pipeline was told (pipelines/masking.py), is above 0; those ``nsfw`` flags
    (the pipeline's ``info["nsfw"]``) black, the canvas not pasted over them."""
    size, channels = canvas.size, len(canvas.getbands())
    weight = prepare_mask(pictures_to_batch([mask], size, 1), blur, invert)
    original = pictures_to_batch([canvas], size, channels)
    out = []
    for result, flagged in zip(results, nsfw or [False] * len(results), strict=True):
        mixed = overlay(pictures_to_batch([result], size, channels), original, weight)
        mixed = black_out(mixed, [flagged])
        array = (mixed[0] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        out.append(Image.fromarray(array[..., 0] if channels == 1 else array, mode=canvas.mode))
    return out
