"""A reader of generated pictures: the object's basic colour name and, for simple shapes, its shape class.

The judge of colour fidelity (does "a crimson heart" come out red?): the colour is
`genpix.data.colour_names.dominant_colour` (Berlin and Kay's basic terms, read from the object's
pixels against the border's background); the shape is read from how much of its bounding box the
object fills, the rule of `genpix.data.synthetic.describe_shapes_image` (1 for a square, pi/4 for a
circle, 1/2 for a triangle) applied to the object's soft coverage (its distance from the border's
background colour), so it works on any plain background.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from genpix.data.colour_names import background_distance, dominant_colour

SQUARE_FILL, CIRCLE_FILL = 0.9, 0.64  # fill above SQUARE_FILL: square; above CIRCLE_FILL: circle; else triangle


@dataclass(frozen=True)
class PictureReading:
    """What the reader sees in one picture.

    Attributes:
        colour: the object's basic colour name (genpix.data.colour_names.BASIC_COLOURS).
        shape: "circle", "square" or "triangle" (None when no shape was asked for).
        fill: the object's soft coverage over the area of its bounding box.
    """

    colour: str
    shape: str | None
    fill: float


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or an array ``(3, H, W)`` / ``(H, W, 3)`` -> uint8 ``(3, H, W)``."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    array = np.asarray(image)
    return array if array.shape[0] == 3 else array.transpose(2, 0, 1)


def read_picture(image: Image.Image | np.ndarray, *, shapes: bool = False) -> PictureReading:
    """Read the colour (and with ``shapes``, the shape class) of the object in ``image``."""
    pixels = as_rgb_array(image)
    distance = background_distance(pixels)
    peak = max(float(distance.max()), 1.0)
    coverage = np.clip(distance / peak, 0, 1) * (distance > 0.15 * peak)  # as describe_shapes_image
    fill = float(coverage.sum() / max(coverage.max(axis=0).sum() * coverage.max(axis=1).sum(), 1e-12))
    shape = None
    if shapes:
        shape = "square" if fill > SQUARE_FILL else "circle" if fill > CIRCLE_FILL else "triangle"
    return PictureReading(dominant_colour(pixels), shape, fill)


def colour_fidelity(images: Iterable[Image.Image | np.ndarray], colour: str) -> float:
    """The share of ``images`` whose object reads as ``colour`` (a basic colour name)."""
    seen = [read_picture(image).colour == colour for image in images]
    return sum(seen) / max(len(seen), 1)
