"""The basic colour name of a picture's pixels: what a person would call the object's colour.

Names are Berlin and Kay's eleven basic colour terms (1969, "Basic Color Terms"): black, white,
grey, red, orange, yellow, green, blue, purple, pink, brown. A pixel is named from its HSV
coordinates (Smith 1978, "Color gamut transform pairs"): low saturation or low value gives an
achromatic term by value; otherwise the hue sector gives the chromatic term, with brown a dark
orange or red and pink a light, weakly saturated red or magenta.

The dark ends of two sectors are set by the XKCD survey (data/colour_lexicon.py): of its names whose
last word is a basic term ("dark red", "grape purple"), the reader names 0.751 by that term. In the
magenta sector every "pink" name has value >= 0.78 and every "purple", "plum" or "grape" name <= 0.65,
so a magenta darker than DARK_MAGENTA is purple; saturated reds ("dark red", "wine red", "crimson")
stay red down to value DEEP_RED, below it ("maroon", "mahogany") they are brown.

`dominant_colour` separates the object from the background (the median of the border pixels) and
names the most common colour among the object's pixels, chromatic terms first: a yellow face with
brown eyes is yellow, a grey cloud grey.
"""

from __future__ import annotations

import numpy as np

BASIC_COLOURS: tuple[str, ...] = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue",
                                  "purple", "pink", "brown")
ACHROMATIC = ("black", "white", "grey")
# Hue sectors in degrees (upper bounds, ascending) and their names; red wraps around 0.
_HUES = ((15, "red"), (36, "orange"), (70, "yellow"), (165, "green"), (255, "blue"), (305, "purple"),
         (335, "pink"), (360, "red"))
MIN_SATURATION = 0.33  # below: achromatic (Noto's blue-greys, #546E7A, have 0.31)
MIN_VALUE = 0.2  # below: black whatever the hue
BACKGROUND_DISTANCE = 60.0  # RGB distance (0-255 scale) from the background colour that counts as object
DARK_MAGENTA = 0.7  # value below which the pink sector is purple ("plum", "aubergine")
DEEP_RED = 0.45  # value down to which a saturated (> DEEP_RED_SATURATION) red is red, not brown
DEEP_RED_SATURATION = 0.9
MIN_CHROMATIC_SHARE = 0.25  # the object is named by a chromatic term when at least this share of it has one


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB in [0, 1] -> HSV ``(..., 3)``: hue in degrees [0, 360), saturation and value in
    [0, 1] (Smith 1978)."""
    value, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = value - low
    saturation = np.where(value > 0, chroma / np.maximum(value, 1e-12), 0.0)
    r, g, b = np.moveaxis(rgb, -1, 0)
    safe = np.maximum(chroma, 1e-12)
    hue = np.select([value == r, value == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4)
    return np.stack([60.0 * np.where(chroma > 0, hue, 0.0), saturation, value], axis=-1)


def pixel_colour_names(pixels: np.ndarray) -> np.ndarray:
    """The basic colour name (an index into BASIC_COLOURS) of every RGB pixel ``(N, 3)`` in [0, 255]."""
    hue, saturation, value = rgb_to_hsv(np.asarray(pixels, dtype=np.float64).reshape(-1, 3) / 255.0).T
    index = {name: i for i, name in enumerate(BASIC_COLOURS)}
    bounds = np.array([upper for upper, _ in _HUES])
    names = np.array([index[name] for _, name in _HUES])[np.searchsorted(bounds, hue, side="right").clip(max=7)]
    warm = (names == index["red"]) | (names == index["orange"])
    dark = (value < 0.55) | ((value < 0.78) & (saturation < 0.75))  # dark, or darkish and dull
    deep_red = (names == index["red"]) & (saturation > DEEP_RED_SATURATION) & (value >= DEEP_RED)
    names = np.where(warm & dark & ~deep_red, index["brown"], names)
    names = np.where((names == index["pink"]) & (value < DARK_MAGENTA), index["purple"], names)
    light_red = (names == index["red"]) & (saturation < 0.55) & (value > 0.7)
    names = np.where(light_red, index["pink"], names)
    grey = np.where(value > 0.85, index["white"], np.where(value < 0.3, index["black"], index["grey"]))
    achromatic = (saturation < MIN_SATURATION) | (value < MIN_VALUE)
    return np.where(achromatic, grey, names)


def background_distance(image: np.ndarray) -> np.ndarray:
    """``(H, W)``: each pixel's RGB distance from the background of uint8 RGB ``(3, H, W)``, the
    median colour of its one-pixel border."""
    values = np.asarray(image, dtype=np.float64)
    border = np.concatenate([values[:, 0], values[:, -1], values[:, :, 0], values[:, :, -1]], axis=1)
    return np.linalg.norm(values - np.median(border, axis=1)[:, None, None], axis=0)


def object_mask(image: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: the pixels that differ from the background by more than BACKGROUND_DISTANCE
    (all pixels when none does)."""
    mask = background_distance(image) > BACKGROUND_DISTANCE
    return mask if mask.any() else np.ones(mask.shape, dtype=bool)


def colour_shares(image: np.ndarray) -> dict[str, float]:
    """The share of the object's pixels (see `object_mask`) of every basic colour name, largest first."""
    pixels = np.asarray(image)[:, object_mask(image)].T
    counts = np.bincount(pixel_colour_names(pixels), minlength=len(BASIC_COLOURS)) / max(len(pixels), 1)
    return dict(sorted(zip(BASIC_COLOURS, counts.tolist()), key=lambda item: -item[1]))


def dominant_colour(image: np.ndarray) -> str:
    """The basic colour name of the object in uint8 RGB ``(3, H, W)`` (see `dominant_name`)."""
    return dominant_name(colour_shares(image))


def dominant_name(shares: dict[str, float]) -> str:
    """The name ruling an object's colour ``shares`` (name -> share of its pixels): its most common
    chromatic name when at least MIN_CHROMATIC_SHARE of it is chromatic, else its most common achromatic one."""
    chromatic = {name: share for name, share in shares.items() if name not in ACHROMATIC}
    if sum(chromatic.values()) >= MIN_CHROMATIC_SHARE:
        return max(chromatic, key=chromatic.__getitem__)
    return max(ACHROMATIC, key=shares.__getitem__)
