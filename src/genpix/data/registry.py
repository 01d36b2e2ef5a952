"""`load_dataset`: one entry point from a dataset name or folder path to an ImageDataset."""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path
from typing import Callable

import torch

from .dataset import SPLITS, DataError, ImageDataset, Split
from .digits import load_digits
from .emoji import load_emoji
from .emoji_captions import load_emoji_captions, load_emoji_colour_names, load_emoji_colour_phrases, load_emoji_colours
from .folder import FOLDER_NATIVE_SIZE, load_folder
from .mnist import FASHION_MNIST, MNIST, IdxSource, load_idx_dataset
from .scenes import load_shape_scenes
from .synthetic import load_shapes
from .transforms import convert_channels, resize_images

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 1024

DATASETS: dict[str, str] = {
    "fashion-mnist": "Zalando's 70k 28x28 grayscale clothing photos, 10 classes, captions in varied wordings "
                     "(apt install dataset-fashion-mnist, or downloaded)",
    "mnist": "70k 28x28 grayscale handwritten digits, 10 classes (downloaded on first use)",
    "digits": "scikit-learn's 1797 8x8 handwritten digits upscaled to 32x32, 10 classes (offline)",
    "shapes": "20k synthetic 32x32 coloured circles, squares and triangles with position captions (offline)",
    "shape-scenes": "20k synthetic 32x32 scenes: one large or 1-3 small shapes on dark backgrounds, captions with "
                    "count, size, colour, shape and position (offline)",
    "emoji": "about 1300 Noto Color Emoji rendered at 64x64, captioned with their Unicode names (offline)",
    "emoji-captions": "the emoji, each repeated with 8 captions from its name and colour (\"a red heart\", "
                      "\"heart, red\"; offline)",
    "emoji-colours": "emoji-captions and 8 copies of every emoji tinted to other basic colours (\"a purple frog\"), "
                     "so colour words mean colours, not objects (offline)",
    "emoji-colour-names": "emoji-colours and 32 copies of every emoji tinted to colours of the XKCD survey's 949 "
                          "names and captioned with them (\"a dusty rose frog\"; one name in ten held out; offline)",
    "emoji-colour-phrases": "emoji-colour-names with the tinted copies also worded in 16 more sentences (\"a frog "
                            "dyed dusty rose\", \"the colour teal on a kite\"; offline)",
}


# IDX datasets, read from files (downloaded when missing); resized afterwards by `_conform`.
_IDX_SOURCES: dict[str, IdxSource] = {"fashion-mnist": FASHION_MNIST, "mnist": MNIST}
# Offline datasets, made directly at the requested size (`image_size` keyword, else their native size).
_MADE: dict[str, Callable[..., ImageDataset]] = {"digits": load_digits, "shapes": load_shapes,
                                                 "shape-scenes": load_shape_scenes, "emoji": load_emoji,
                                                 "emoji-captions": load_emoji_captions,
                                                 "emoji-colours": load_emoji_colours,
                                                 "emoji-colour-names": load_emoji_colour_names,
                                                 "emoji-colour-phrases": load_emoji_colour_phrases}


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every named dataset, for `genpix datasets`."""
    return list(DATASETS.items())


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_options(split: str, image_size: int | None, channels: int | None, limit: int | None) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if image_size is not None and (not _is_int(image_size) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise DataError(f"image size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {image_size!r}")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise DataError(f"limit must be a positive integer, got {limit!r}")


def _conform(dataset: ImageDataset, image_size: int | None, channels: int | None) -> ImageDataset:
    """Resize and convert channels where the loader did not already produce them."""
    original = images = dataset.images.numpy()
    if channels == 1:  # fewer channels to resize
        images = convert_channels(images, 1)
    if image_size is not None and images.shape[-1] != image_size:
        images = resize_images(images, image_size)
    if channels is not None:
        images = convert_channels(images, channels)
    if images is original:
        return dataset
    return dataclasses.replace(dataset, images=torch.from_numpy(images))


def load_dataset(
    spec: str,
    *,
    split: Split = "train",
    image_size: int | None = None,
    channels: int | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
) -> ImageDataset:
    """Load a named dataset (see DATASETS) or a folder of images into memory.

    Args:
        spec: "fashion-mnist", "mnist", "digits", "shapes", "emoji", or a folder path.
        split: "train", "test" (the official test files for (fashion-)mnist, else every 10th item in a
            stable order) or "all".
        image_size: square side in pixels (4..1024), or None for the native size (28 for (fashion-)mnist,
            32 for digits and shapes, 64 for emoji and folders).
        channels: 1 or 3, or None for native (1 for (fashion-)mnist and digits, 3 for shapes and emoji;
            folders: 1 when every image is grayscale, else 3).
        data_dir: an extra folder to look in for downloaded files ((fashion-)mnist).
        limit: keep only the first `limit` images of the split (quick runs and tests).

    Returns:
        ImageDataset with uint8 images `(N, channels, image_size, image_size)` in [0, 255].

    Raises:
        DataError (one line) for an unknown name, a bad option, missing or unreadable data.
    """
    _check_options(split, image_size, channels, limit)
    image_size, channels, limit = (None if v is None else int(v) for v in (image_size, channels, limit))
    if spec in _IDX_SOURCES:
        dataset = load_idx_dataset(_IDX_SOURCES[spec], split, data_dir=data_dir, limit=limit)
    elif spec in _MADE:
        sized = {} if image_size is None else {"image_size": image_size}
        dataset = _MADE[spec](split, limit=limit, **sized)
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "is neither a dataset name nor an existing folder"
            raise DataError(f"{spec!r} {what}; give a folder of images or one of: {', '.join(DATASETS)}")
        size = image_size or FOLDER_NATIVE_SIZE
        dataset = load_folder(folder, split, image_size=size, channels=channels, limit=limit)
    return _conform(dataset, image_size, channels)
