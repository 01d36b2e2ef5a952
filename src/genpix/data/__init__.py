"""Datasets for genpix: named sets (fashion-mnist, mnist, digits, shapes, emoji) and image folders.

    from genpix.data import load_dataset
    ds = load_dataset("fashion-mnist", split="train", image_size=32, limit=1000)
    ds.images  # uint8 (N, C, H, W) in [0, 255]; ds.labels, ds.class_names, ds.captions

Nothing is loaded at import time.
"""

from .dataset import DataError, ImageDataset
from .folder import load_image_file
from .registry import DATASETS, list_datasets, load_dataset

__all__ = ["DATASETS", "DataError", "ImageDataset", "list_datasets", "load_dataset", "load_image_file"]
