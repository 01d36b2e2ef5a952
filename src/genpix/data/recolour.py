"""Recolouring a picture's object to a basic colour, for captions that say colours the data lacks.

In the emoji, colour and object go together (faces are yellow, frogs green, hearts come in eight
colours): a model trained on them learns "a frog" -> green, not "green" -> green, and a violet frog
or an emerald box is out of its reach. `recolour` tints the object's main colour region (the pixels
named its dominant basic colour, data/colour_names.py) to one of Berlin and Kay's terms while keeping
its shading: in HSV, the region takes the target's hue and its saturation and value are the target's
scaled by each pixel's ratio to the region's mean (so highlights stay lighter and shadows darker);
outlines, eyes and other colours of the object are left as they are. A tint counts only when the
picture reads as the target afterwards (`dominant_colour`), so its caption says what is drawn.
"""

from __future__ import annotations

import numpy as np

from .colour_names import BASIC_COLOURS, dominant_name, object_mask, pixel_colour_names, rgb_to_hsv

# A typical (hue in degrees, saturation, value) of every basic colour, inside its sector of
# colour_names (brown a dark orange, pink a light magenta-red, the achromatic terms without saturation).
TINTS: dict[str, tuple[float, float, float]] = {
    "red": (2.0, 0.85, 0.85), "orange": (27.0, 0.9, 0.97), "yellow": (52.0, 0.85, 0.98),
    "green": (115.0, 0.75, 0.72), "blue": (215.0, 0.8, 0.88), "purple": (280.0, 0.65, 0.72),
    "pink": (322.0, 0.5, 0.96), "brown": (24.0, 0.75, 0.45), "white": (0.0, 0.0, 0.97),
    "grey": (0.0, 0.0, 0.6), "black": (0.0, 0.0, 0.12),
}
assert set(TINTS) == set(BASIC_COLOURS)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of `rgb_to_hsv`: HSV with hue in degrees -> RGB in [0, 1]."""
    hue, saturation, value = np.moveaxis(hsv, -1, 0)
    sector = (hue / 60.0) % 6
    chroma = value * saturation
    x = chroma * (1 - np.abs(sector % 2 - 1))
    zero = np.zeros_like(chroma)
    k = np.floor(sector).astype(int).clip(0, 5)
    choices = [(chroma, x, zero), (x, chroma, zero), (zero, chroma, x), (zero, x, chroma), (x, zero, chroma),
               (chroma, zero, x)]
    r, g, b = (np.choose(k, [c[i] for c in choices]) for i in range(3))
    return np.stack([r, g, b], axis=-1) + (value - chroma)[..., None]


def main_region(image: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: the object's pixels named its dominant basic colour (`dominant_name`, the
    rule `dominant_colour` reads by) in uint8 RGB ``(3, H, W)``."""
    mask = object_mask(image)
    names = pixel_colour_names(np.asarray(image).reshape(3, -1).T).reshape(mask.shape)
    shares = np.bincount(names[mask], minlength=len(BASIC_COLOURS)) / mask.sum()
    return mask & (names == BASIC_COLOURS.index(dominant_name(dict(zip(BASIC_COLOURS, shares.tolist())))))


def recolour(image: np.ndarray, colour: str) -> np.ndarray:
    """uint8 RGB ``(3, H, W)`` with its `main_region` tinted to the basic colour ``colour`` (TINTS)."""
    return tint(image, TINTS[colour])


def tint(image: np.ndarray, target: tuple[float, float, float]) -> np.ndarray:
    """uint8 RGB ``(3, H, W)`` with its `main_region` tinted to ``target`` (hue in degrees, saturation,
    value), keeping its shading."""
    hue, saturation, value = target
    region = main_region(image)
    hsv = rgb_to_hsv(np.moveaxis(np.asarray(image, dtype=np.float64), 0, -1) / 255.0)
    part = hsv[region]
    # keep the shading: each pixel's saturation and value relative to the region's mean
    for channel, target in ((1, saturation), (2, value)):
        mean = part[:, channel].mean() if len(part) else 0.0
        # a region without saturation (a grey cloud) takes the target's saturation as it is
        part[:, channel] = (target * part[:, channel] / mean).clip(0.0, 1.0) if mean > 0.1 else target
    part[:, 0] = hue
    hsv[region] = part
    return np.moveaxis(np.rint(hsv_to_rgb(hsv) * 255.0).clip(0, 255).astype(np.uint8), -1, 0)
