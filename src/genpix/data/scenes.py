"""`shape-scenes`: seeded synthetic scenes whose captions name count, size, colour, shape and position.

Each image holds one large shape or one, two or three small ones, all of one shape and colour, grouped
at one of five places, on a dark background of random tint (not captioned): "a large red circle at the
top left", "three small blue squares in the centre". 3 shapes x 6 colours x 5 places x 4
count-and-size choices = 360 captions. Every image is fully described by a :class:`SceneSpec`, and
:func:`describe_scene` reads all five attributes back from pixels, so a text-to-image model's prompt
fidelity can be scored per attribute (benchmarks/prompt_fidelity.py --data shape-scenes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .dataset import ImageDataset, Split
from .synthetic import COLOURS, POSITIONS, SHAPES, SHAPES_NATIVE_SIZE, render_dataset, render_shapes

SIZES: dict[str, tuple[float, float]] = {"small": (0.075, 0.09), "large": (0.17, 0.2)}  # half-extent ranges
COUNTS: dict[int, str] = {1: "a", 2: "two", 3: "three"}
# (count, size) pairs that fit in a quarter of the image
LAYOUTS: tuple[tuple[int, str], ...] = ((1, "large"), (1, "small"), (2, "small"), (3, "small"))
# Offsets of each shape from the group's centre, as fractions of the side.
ARRANGEMENTS: dict[int, tuple[tuple[float, float], ...]] = {
    1: ((0.0, 0.0),),
    2: ((-0.125, 0.0), (0.125, 0.0)),
    3: ((-0.125, 0.11), (0.125, 0.11), (0.0, -0.11)),
}
SCENES_COUNT = 20_000
SCENES_SEED = 1
MAX_BACKGROUND = 48  # each background channel is uniform in [0, MAX_BACKGROUND]
MAX_OFFSET = 0.02  # group jitter, as a fraction of the side
_CAPTION_RE = re.compile(r"^(a|two|three) (small|large) (\w+?) (\w+?)s? (?:at|in) the (.+)$")


@dataclass(frozen=True)
class SceneSpec:
    """Everything drawn in one scene."""

    count: int
    size: str
    shape: str
    colour: str
    position: str
    radius: float = 0.0875
    offset: tuple[float, float] = (0.0, 0.0)
    background: tuple[int, int, int] = (0, 0, 0)

    @property
    def caption(self) -> str:
        return scene_caption(self.count, self.size, self.shape, self.colour, self.position)

    @property
    def attributes(self) -> tuple[int, str, str, str, str]:
        return self.count, self.size, self.shape, self.colour, self.position


def scene_caption(count: int, size: str, shape: str, colour: str, position: str) -> str:
    """E.g. "a large red circle at the top left", "two small blue squares in the centre"."""
    preposition = "in" if position == "centre" else "at"
    return f"{COUNTS[count]} {size} {colour} {shape}{'s' if count > 1 else ''} {preposition} the {position}"


def parse_scene_caption(caption: str) -> tuple[int, str, str, str, str]:
    """(count, size, shape, colour, position) of a caption of :func:`scene_caption`'s form; ValueError otherwise."""
    match = _CAPTION_RE.match(caption.strip().lower())
    counts = {word: n for n, word in COUNTS.items()}
    if (not match or match[4] not in SHAPES or match[3] not in COLOURS or match[5] not in POSITIONS
            or (counts[match[1]], match[2]) not in LAYOUTS):
        raise ValueError(f"not a shape-scenes caption: {caption!r} (expected e.g. 'two small red circles at "
                         f"the top left')")
    return counts[match[1]], match[2], match[4], match[3], match[5]


def all_captions() -> list[str]:
    """The 360 captions, in a fixed order."""
    return [scene_caption(n, size, shape, colour, position) for n, size in LAYOUTS for shape in SHAPES
            for colour in COLOURS for position in POSITIONS]


def sample_scenes(count: int = SCENES_COUNT, seed: int = SCENES_SEED) -> list[SceneSpec]:
    """`count` random scenes; scene i depends only on (seed, i), not on `count`."""
    u = np.random.default_rng(seed).random((count, 10))  # one row of uniforms per image
    colours, positions = list(COLOURS), list(POSITIONS)
    scenes = []
    for row in u:
        n, size = LAYOUTS[int(row[0] * len(LAYOUTS))]
        low, high = SIZES[size]
        scenes.append(SceneSpec(
            count=n, size=size, shape=SHAPES[int(row[1] * len(SHAPES))], colour=colours[int(row[2] * len(colours))],
            position=positions[int(row[3] * len(positions))], radius=float(low + row[4] * (high - low)),
            offset=(float((2 * row[5] - 1) * MAX_OFFSET), float((2 * row[6] - 1) * MAX_OFFSET)),
            background=tuple(int(v * (MAX_BACKGROUND + 1)) for v in row[7:10])))
    return scenes


def render_scene(spec: SceneSpec, size: int = SHAPES_NATIVE_SIZE) -> np.ndarray:
    """Draw `spec` as uint8 `(3, size, size)`."""
    px, py = POSITIONS[spec.position]
    centres = [(px + spec.offset[0] + dx, py + spec.offset[1] + dy) for dx, dy in ARRANGEMENTS[spec.count]]
    return render_shapes([(spec.shape, c, spec.radius) for c in centres], COLOURS[spec.colour], size,
                         background=spec.background)


def describe_scene(image: np.ndarray) -> tuple[int, str, str, str, str] | None:
    """Read (count, size, shape, colour, position) from uint8 `(3, H, W)`; None if nothing stands out.

    The background is the median of the border pixels; a pixel's coverage is its distance from the
    background over the largest such distance. count: connected regions of coverage > 1/2 (of at least
    2 pixels); size: large when the widest region spans more than a quarter of the side; colour: the
    nearest COLOURS entry to the mean of the most covered pixels; position: the nearest POSITIONS
    centre to the coverage centroid; shape: covered area / bounding-box area, averaged over the
    regions, 1 for a square, pi/4 for a circle, 1/2 for the triangle (a little more when small).
    """
    values = np.asarray(image, dtype=np.float64)
    side = values.shape[-1]
    border = np.concatenate([values[:, 0], values[:, -1], values[:, :, 0], values[:, :, -1]], axis=1)
    background = np.median(border, axis=1)
    distance = np.sqrt(((values - background[:, None, None]) ** 2).sum(axis=0))  # (H, W)
    peak = distance.max()
    if peak < 64:
        return None
    coverage = np.clip(distance / peak, 0, 1)
    labels, found = ndimage.label(coverage > 0.5)
    regions = [i for i in range(1, found + 1) if (labels == i).sum() >= 2]
    if not regions:
        return None
    boxes = ndimage.find_objects(labels)
    extents = {i: max(b.stop - b.start for b in boxes[i - 1]) for i in regions}
    size = "large" if max(extents.values()) > side / 4 else "small"
    core = coverage >= 0.8
    mean = values[:, core].mean(axis=1)
    colour = min(COLOURS, key=lambda name: float(np.sum((np.array(COLOURS[name]) - mean) ** 2)))
    weights = coverage * (coverage > 0.15)
    ys, xs = np.mgrid[0:side, 0:side] + 0.5
    centre = (float((weights * xs).sum() / weights.sum() / side), float((weights * ys).sum() / weights.sum() / side))
    position = min(POSITIONS, key=lambda name: math.dist(POSITIONS[name], centre))
    fill = float(np.mean([_fill(coverage, boxes[i - 1]) for i in regions]))
    shape = "square" if fill > 0.9 else "circle" if fill > 0.725 else "triangle"
    return len(regions), size, shape, colour, position


def _fill(coverage: np.ndarray, box: tuple[slice, slice]) -> float:
    """Covered area / (width * height) of one region, in soft coverage over its box grown by a pixel."""
    rows, cols = (slice(max(b.start - 1, 0), b.stop + 1) for b in box)
    patch = coverage[rows, cols] * (coverage[rows, cols] > 0.1)
    return float(patch.sum() / (patch.max(axis=0).sum() * patch.max(axis=1).sum()))


def load_shape_scenes(split: Split = "train", *, image_size: int = SHAPES_NATIVE_SIZE, limit: int | None = None,
                      count: int = SCENES_COUNT, seed: int = SCENES_SEED) -> ImageDataset:
    """The scenes as uint8 `(N, 3, image_size, image_size)`; labels index SHAPES; captions name all five
    attributes. `count` images in "all" (test = every 10th); nothing is cached on disk."""
    return render_dataset(sample_scenes(count, seed), render_scene, "shape-scenes", split, image_size, limit)
