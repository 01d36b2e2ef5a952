"""scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), upscaled with Pillow."""

from __future__ import annotations

import numpy as np

from .dataset import ImageDataset, Split, make_dataset, split_indices
from .transforms import resize_images

DIGITS_NATIVE_SIZE = 32
DIGIT_NAMES = tuple(str(d) for d in range(10))


def load_digits(
    split: Split = "train", *, image_size: int = DIGITS_NATIVE_SIZE, limit: int | None = None
) -> ImageDataset:
    """The sklearn digits as uint8 `(N, 1, image_size, image_size)` in [0, 255], labels 0..9.

    The 8x8 values 0..16 are scaled to 0..255, then resized with Pillow (bicubic when enlarging).
    The split is every 10th image (test) in sklearn's order.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # slow import: only when asked for

    bunch = sklearn_digits()
    index = split_indices(len(bunch.target), split)[:limit]
    values = bunch.images[index]  # (N, 8, 8) float64 in [0, 16]
    images = np.rint(values * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target[index].astype(np.int64)
    captions = tuple(f"a handwritten digit {d}" for d in labels.tolist())
    return make_dataset(resize_images(images, image_size), labels, DIGIT_NAMES, captions, "digits", split)
