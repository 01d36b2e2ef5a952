"""Image transforms shared by the loaders: crop to an aspect ratio, normalise modes, resize, channels.

PIL images go in and out of the per-image helpers; batches are numpy uint8 arrays `(N, C, H, W)` in [0, 255].
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Modes whose pixels are one grey value (after dropping alpha); everything else becomes RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def crop_to_aspect_ratio(image: Image.Image, aspect: float = 1.0) -> Image.Image:
    """The largest centred crop of `image` whose width / height equals `aspect` (no distortion).

    Like keras' `crop_to_aspect_ratio`: a 300x100 image with aspect 1 keeps its middle 100x100.
    """
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    width, height = image.size
    crop_w = min(width, round(height * aspect))
    crop_h = min(height, round(width / aspect))
    if (crop_w, crop_h) == (width, height):
        return image
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h))


def is_grayscale_mode(mode: str) -> bool:
    """True when `normalise_mode` turns an image of this Pillow mode into "L"."""
    return mode in GRAY_MODES


def normalise_mode(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to "L" (grayscale modes) or "RGB" (everything else).

    Alpha (LA, RGBA, P or RGB with transparency) is composited on white; 16-bit data (I;16, I) is
    scaled from [0, 65535] to [0, 255]; 1-bit becomes 0/255; CMYK, YCbCr, palette and others become RGB.
    """
    mode = image.mode
    if "transparency" in image.info and mode in ("L", "RGB", "P"):
        image, mode = image.convert("LA" if mode == "L" else "RGBA"), ("LA" if mode == "L" else "RGBA")
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        # round(v * 255 / 65535) = round(v / 257): maps 0 -> 0 and 65535 -> 255 exactly.
        values = (np.clip(values, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(values.astype(np.uint8), mode="L")
    if mode == "F":
        values = np.clip(np.rint(np.asarray(image)), 0, 255)
        return Image.fromarray(values.astype(np.uint8), mode="L")
    if mode in ("LA", "La"):
        return _composite_on_white(image.convert("LA"), "L")
    if mode in ("RGBA", "RGBa", "P", "PA"):
        return _composite_on_white(image.convert("RGBA"), "RGB")
    return image.convert("RGB")


def _composite_on_white(image: Image.Image, out_mode: str) -> Image.Image:
    """Blend an LA / RGBA image over a white background: out = c * a + 255 * (1 - a)."""
    values = np.asarray(image).astype(np.int32)
    colour, alpha = values[..., :-1], values[..., -1:]
    blended = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    if out_mode == "L":
        return Image.fromarray(blended[..., 0].astype(np.uint8), mode="L")
    return Image.fromarray(blended.astype(np.uint8), mode="RGB")


def to_pil_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert an "L" or "RGB" image to 1 ("L", Pillow's ITU-R 601-2 luma) or 3 ("RGB") channels."""
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize a square image to `size` x `size`: Lanczos when shrinking, bicubic when enlarging."""
    if image.size == (size, size):
        return image
    shrinking = image.size[0] > size
    resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    return image.resize((size, size), resample)


def pil_to_chw(image: Image.Image) -> np.ndarray:
    """An "L" or "RGB" image as a uint8 array `(C, H, W)`."""
    values = np.asarray(image, dtype=np.uint8)
    return values[None] if values.ndim == 2 else values.transpose(2, 0, 1)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a batch of square uint8 images `(N, C, H, W)` to `(N, C, size, size)` with Pillow."""
    if images.shape[-1] == size:
        return images
    out = np.empty((images.shape[0], images.shape[1], size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        out[i] = pil_to_chw(resize_square(pil, size))
    return out


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 `(N, C, H, W)` to `channels` (1 or 3) channels.

    1 -> 3 repeats the grey value; 3 -> 1 is Pillow's "L" conversion,
    L = R * 299/1000 + G * 587/1000 + B * 114/1000, in its exact fixed-point form.
    """
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=1)
    rgb = images.astype(np.uint32)
    luma = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16
    return luma[:, None].astype(np.uint8)
