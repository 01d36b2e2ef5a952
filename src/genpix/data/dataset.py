"""The in-memory image dataset every loader returns, the data error type, and the split rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from genpix.errors import GenpixError

Split = Literal["train", "test", "all"]
SPLITS: tuple[Split, ...] = ("train", "test", "all")

# Every 10th item (by a stable order) is held out for the test split.
TEST_EVERY = 10


class DataError(GenpixError, ValueError):
    """A user-facing data problem (missing files, unreadable folder, bad option).

    The message is one line that says what is wrong and what to do; callers print it without a traceback.
    """


@dataclass(frozen=True)
class ImageDataset:
    """A whole dataset of same-size square images held in memory.

    Attributes:
        images: uint8 tensor `(N, C, H, W)` with values in [0, 255], C in {1, 3}, H == W.
        labels: int64 tensor `(N,)` of class indices in [0, len(class_names)), or None.
        class_names: the name of each label index, or None when there are no labels.
        captions: one text caption per image (for text-to-image), or None.
        name: the dataset's name (e.g. "fashion-mnist") or the folder path it came from.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: tuple[str, ...] | None
    captions: tuple[str, ...] | None
    name: str

    def __post_init__(self) -> None:
        images = self.images
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 (N, C, H, W) with C in {{1, 3}}, got {images.dtype} {tuple(images.shape)}"
            )
        if images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be square, got {images.shape[2]}x{images.shape[3]}")
        n = images.shape[0]
        if self.labels is not None:
            if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (n,):
                raise ValueError(f"labels must be int64 ({n},), got {self.labels.dtype} {tuple(self.labels.shape)}")
            if self.class_names is None:
                raise ValueError("labels need class_names")
            if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
                raise ValueError(f"labels must lie in [0, {len(self.class_names)})")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"need one caption per image: {len(self.captions)} captions for {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        """Height (= width) of every image in pixels."""
        return int(self.images.shape[2])

    @property
    def channels(self) -> int:
        """1 (grayscale) or 3 (RGB)."""
        return int(self.images.shape[1])


def split_indices(n: int, split: Split) -> np.ndarray:
    """Indices (int64, ascending) of the items of `split` among `n` items in a stable order.

    test = every 10th item (indices 9, 19, ...), and at least the last item when 2 <= n < 10;
    train = the rest; all = everything.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    index = np.arange(n, dtype=np.int64)
    if split == "all":
        return index
    is_test = index % TEST_EVERY == TEST_EVERY - 1
    if n >= 2 and not is_test.any():
        is_test[-1] = True
    return index[is_test] if split == "test" else index[~is_test]


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    class_names: tuple[str, ...] | None,
    captions: tuple[str, ...] | None,
    name: str,
    split: Split,
) -> ImageDataset:
    """Wrap numpy arrays (images uint8 `(N, C, H, W)`, labels `(N,)`) into an ImageDataset.

    Raises DataError when the selected split holds no image.
    """
    if len(images) == 0:
        raise DataError(f"{name}: the {split!r} split has no images")
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if not images.flags.writeable:
        images = images.copy()
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        class_names=class_names,
        captions=captions,
        name=name,
    )
