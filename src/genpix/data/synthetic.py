"""`shapes`: a seeded synthetic dataset of one coloured shape on black, with captions that say what and where.

Every image is fully described by a ShapeSpec, so a checker can test a text-to-image model's prompt
fidelity: generate from "a red circle at the top left", then `describe_shapes_image` the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .dataset import ImageDataset, Split, make_dataset, split_indices

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 200, 40),
    "blue": (40, 90, 255),
    "yellow": (250, 220, 20),
    "purple": (160, 40, 220),
    "white": (255, 255, 255),
}
# Position name -> centre (x, y) as fractions of the image side.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "centre": (0.5, 0.5),
}
SHAPES_COUNT = 20_000
SHAPES_SEED = 0
SHAPES_NATIVE_SIZE = 32
RADIUS_RANGE = (0.13, 0.19)  # half the shape's extent, as a fraction of the image side
MAX_OFFSET = 0.03  # centre jitter, as a fraction of the image side
_CAPTION_RE = re.compile(r"^an? (\w+) (\w+) (?:at|in) the (.+)$")


@dataclass(frozen=True)
class ShapeSpec:
    """Everything drawn in one image: shape name, colour name, position name, half-extent and jitter."""

    shape: str
    colour: str
    position: str
    radius: float = sum(RADIUS_RANGE) / 2
    offset: tuple[float, float] = (0.0, 0.0)

    @property
    def caption(self) -> str:
        return shapes_caption(self.shape, self.colour, self.position)


def shapes_caption(shape: str, colour: str, position: str) -> str:
    """E.g. "a red circle at the top left", "a white square in the centre"."""
    preposition = "in" if position == "centre" else "at"
    return f"a {colour} {shape} {preposition} the {position}"


def parse_shapes_caption(caption: str) -> tuple[str, str, str]:
    """(shape, colour, position) named by a caption of `shapes_caption`'s form; ValueError otherwise."""
    match = _CAPTION_RE.match(caption.strip().lower())
    if not match or match[2] not in SHAPES or match[1] not in COLOURS or match[3] not in POSITIONS:
        raise ValueError(f"not a shapes caption: {caption!r} (expected e.g. 'a red circle at the top left')")
    return match[2], match[1], match[3]


def sample_specs(count: int = SHAPES_COUNT, seed: int = SHAPES_SEED) -> list[ShapeSpec]:
    """`count` random specs; spec i depends only on (seed, i), not on `count`."""
    u = np.random.default_rng(seed).random((count, 6))  # one row of uniforms per image
    colours, positions = list(COLOURS), list(POSITIONS)
    return [
        ShapeSpec(
            shape=SHAPES[int(row[0] * len(SHAPES))],
            colour=colours[int(row[1] * len(colours))],
            position=positions[int(row[2] * len(positions))],
            radius=float(RADIUS_RANGE[0] + row[3] * (RADIUS_RANGE[1] - RADIUS_RANGE[0])),
            offset=(float((2 * row[4] - 1) * MAX_OFFSET), float((2 * row[5] - 1) * MAX_OFFSET)),
        )
        for row in u
    ]


def shapes_attributes(
    i: int, split: Split = "all", *, count: int = SHAPES_COUNT, seed: int = SHAPES_SEED
) -> ShapeSpec:
    """The spec of item `i` of `load_shapes(split)` (same count and seed)."""
    return sample_specs(count, seed)[int(split_indices(count, split)[i])]


def render_spec(spec: ShapeSpec, size: int = SHAPES_NATIVE_SIZE) -> np.ndarray:
    """Draw `spec` as uint8 `(3, size, size)` on black."""
    centre = (POSITIONS[spec.position][0] + spec.offset[0], POSITIONS[spec.position][1] + spec.offset[1])
    return render_shapes([(spec.shape, centre, spec.radius)], COLOURS[spec.colour], size)


def render_shapes(shapes: list[tuple[str, tuple[float, float], float]], fill: tuple[int, int, int], size: int,
                  background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Draw (shape, (cx, cy), half-extent) items, in fractions of the side, in one colour on ``background``
    as uint8 `(3, size, size)`: drawn at up to 4x with ImageDraw, box-filtered down (antialiasing)."""
    scale = max(1, min(4, 512 // size))
    side = size * scale
    canvas = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(canvas)
    for shape, (fx, fy), radius in shapes:
        cx, cy, r = fx * side, fy * side, radius * side
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape == "square":
            h = 0.9 * r  # a little smaller than the circle's box so both look the same size
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
        else:
            raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if scale > 1:
        canvas = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(canvas).transpose(2, 0, 1).copy()


def render_shape(
    shape: str, colour: str, position: str, size: int = SHAPES_NATIVE_SIZE, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draw one shape as uint8 `(3, size, size)`; `rng` varies its size and jitter (None: middle size, no jitter)."""
    for value, allowed in ((shape, SHAPES), (colour, COLOURS), (position, POSITIONS)):
        if value not in allowed:
            raise ValueError(f"unknown {value!r}; choose one of {', '.join(allowed)}")
    spec = ShapeSpec(shape, colour, position)
    if rng is not None:
        u = rng.random(3)
        spec = ShapeSpec(shape, colour, position,
                         radius=float(RADIUS_RANGE[0] + u[0] * (RADIUS_RANGE[1] - RADIUS_RANGE[0])),
                         offset=(float((2 * u[1] - 1) * MAX_OFFSET), float((2 * u[2] - 1) * MAX_OFFSET)))
    return render_spec(spec, size)


def describe_shapes_image(image: np.ndarray) -> tuple[str, str, str] | None:
    """Guess (shape, colour, position) of the brightest blob in uint8 `(3, H, W)`; None if it is all dark.

    colour: nearest COLOURS entry to the mean of the fully covered pixels; position: nearest POSITIONS
    centre to the coverage centroid; shape: area / (width * height) is 1 for a square,
    pi/4 for a circle and 1/2 for the triangle. Exact on this dataset at 32 px and above; at 16 px the
    shapes are too few pixels to tell apart reliably.
    """
    values = np.asarray(image, dtype=np.float64)
    brightness = values.max(axis=0)  # (H, W)
    peak = brightness.max()
    if peak < 64:
        return None
    core = brightness >= 0.8 * peak
    mean = values[:, core].mean(axis=1)
    colour = min(COLOURS, key=lambda name: float(np.sum((np.array(COLOURS[name]) - mean) ** 2)))
    coverage = np.clip(brightness / max(peak, 1.0), 0, 1) * (brightness > 0.15 * peak)
    area = coverage.sum()
    size = values.shape[-1]
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    centre = (float((coverage * xs).sum() / area / size), float((coverage * ys).sum() / area / size))
    position = min(POSITIONS, key=lambda name: math.dist(POSITIONS[name], centre))
    fill = area / (coverage.max(axis=0).sum() * coverage.max(axis=1).sum())  # area / (width * height)
    shape = "square" if fill > 0.9 else "circle" if fill > 0.64 else "triangle"
    return shape, colour, position


def load_shapes(
    split: Split = "train",
    *,
    image_size: int = SHAPES_NATIVE_SIZE,
    limit: int | None = None,
    count: int = SHAPES_COUNT,
    seed: int = SHAPES_SEED,
) -> ImageDataset:
    """The shapes dataset as uint8 `(N, 3, image_size, image_size)`; labels index SHAPES; captions name all three
    attributes. `count` images in "all" (test = every 10th); nothing is cached on disk."""
    return render_dataset(sample_specs(count, seed), render_spec, "shapes", split, image_size, limit)


def render_dataset(specs: list, render: Callable[[Any, int], np.ndarray], name: str, split: Split,
                   image_size: int, limit: int | None) -> ImageDataset:
    """The ``split`` of ``specs`` (each with a ``shape`` and a ``caption``) drawn by ``render(spec, size)``;
    labels index SHAPES."""
    index = split_indices(len(specs), split)[:limit].tolist()
    images = np.zeros((len(index), 3, image_size, image_size), dtype=np.uint8)
    for row, i in enumerate(index):
        images[row] = render(specs[i], image_size)
    labels = np.array([SHAPES.index(specs[i].shape) for i in index], dtype=np.int64)
    return make_dataset(images, labels, SHAPES, tuple(specs[i].caption for i in index), name, split)
