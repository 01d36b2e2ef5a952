"""The image sets `genpix eval` compares: a dataset split, a folder, a .npy array, or a model's samples.

    fashion-mnist:test   a named dataset (see `genpix datasets`) and split (default test)
    DIR                  a folder of images (e.g. `genpix sample -o DIR`), searched recursively
    FILE.npy             a uint8 array (N, H, W, C) as `genpix sample --npy` writes, or (N, H, W),
                         or float in [0, 1]
    MODEL                a model folder or bundled model: generates the images itself
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genpix.errors import GenpixError

GENERATE_CHUNK = 500  # images per pipeline call


@dataclass(frozen=True)
class ImageSet:
    """images: uint8 or float (N, C, H, W) in [0, 255] / [0, 1]; labels (N,) when the source has them."""

    images: torch.Tensor
    name: str
    labels: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None
    dataset: str | None = None  # the named dataset it came from (picks the default domain features)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])


def load_image_set(spec: str, limit: int | None = None, *, device: torch.device = torch.device("cpu"),
                   seed: int = 0, steps: int | None = None, sampler: str | None = None,
                   cfg_scale: float | None = None, class_name: str | None = None) -> ImageSet:
    """The first `limit` images named by `spec` (see the module docstring)."""
    from genpix.data import DATASETS
    from genpix.pipelines.models import bundled_models

    name, _, split = spec.partition(":")
    if name in DATASETS:
        return _dataset(name, split or "test", limit)
    path = Path(spec).expanduser()
    if path.suffix == ".npy":
        return _npy(path, limit)
    if path.is_dir() and not (path / "config.json").is_file():
        return _folder(path, limit)
    if not path.exists() and spec not in bundled_models():
        raise GenpixError(f"{spec!r} is not a dataset ({', '.join(DATASETS)}, with :train or :test), "
                          f"a folder of images, a .npy file, a model folder or a bundled model")
    return _generate(spec, limit or 10000, device, seed=seed, steps=steps, sampler=sampler, cfg_scale=cfg_scale,
                     class_name=class_name)


def _dataset(name: str, split: str, limit: int | None) -> ImageSet:
    from genpix.data import load_dataset

    data = load_dataset(name, split=split, limit=limit)
    return ImageSet(data.images, f"{name}:{split}", data.labels, data.class_names, dataset=name,
                    info={"source": "dataset", "split": split})


def _npy(path: Path, limit: int | None) -> ImageSet:
    if not path.is_file():
        raise GenpixError(f"{path} does not exist")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise GenpixError(f"{path} is not a readable .npy array ({error})") from None
    array = np.asarray(array[:limit])
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise GenpixError(f"{path}: expected images (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {array.shape}")
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    if images.dtype != torch.uint8:
        images = images.float()
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise GenpixError(f"{path}: float images must lie in [0, 1] (uint8 in [0, 255] also works)")
    return ImageSet(images.contiguous(), path.name, info={"source": "npy"})


def _folder(path: Path, limit: int | None) -> ImageSet:
    """A folder's images at the size of its first image (others are centre-cropped and resized to it)."""
    from PIL import Image

    from genpix.data import load_dataset
    from genpix.data.folder import list_image_files

    files = list_image_files(path)
    if not files:
        raise GenpixError(f"{path} holds no images (jpg, png, webp, bmp, gif)")
    with Image.open(files[0]) as first:
        size = min(first.size)
    data = load_dataset(str(path), split="all", image_size=size, limit=limit)
    return ImageSet(data.images, str(path), info={"source": "folder"})


def _generate(model: str, n: int, device: torch.device, *, seed: int, **options: Any) -> ImageSet:
    from genpix.pipelines import load_pipeline
    from genpix.pipelines.class_prior import generate_with_prior
    from genpix.pipelines.request import GenerationRequest

    pipe = load_pipeline(model, device=device)
    given = {k: v for k, v in options.items() if v is not None}
    parts = [generate_with_prior(pipe, GenerationRequest.of(n=min(GENERATE_CHUNK, n - start), seed=seed + start,
                                                            **given)).tensors
             for start in range(0, n, GENERATE_CHUNK)]
    return ImageSet(torch.cat(parts), model, info={"source": "model", "seed": seed, **given})
