"""MNIST and Fashion-MNIST: find the IDX files locally or download them (MD5-checked), then read them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .captions import FASHION_CAPTIONS, ClassCaptions
from .dataset import DataError, ImageDataset, Split, make_dataset
from .download import DOWNLOAD_TIMEOUT_S, DownloadError, default_cache_dir, download
from .idx import read_idx

DATA_DIR_ENV = "GENPIX_DATA_DIR"
_PARTS = {"train": ("train-images", "train-labels"), "test": ("test-images", "test-labels")}


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX dataset lives and what its labels mean.

    Attributes:
        name: dataset name, also the sub-folder under GENPIX_DATA_DIR and the cache dir.
        base_url: folder URL the files are downloaded from.
        files: part ("train-images", "train-labels", "test-images", "test-labels") -> (file name, MD5).
        class_names: the name of each label.
        captions: the phrasings and templates that caption each label's images.
        system_dirs: read-only folders a package manager installs the files into.
        install_hint: a command that installs the files, or None.
    """

    name: str
    base_url: str
    files: dict[str, tuple[str, str]]
    class_names: tuple[str, ...]
    captions: ClassCaptions
    system_dirs: tuple[str, ...] = ()
    install_hint: str | None = None


FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    files={
        "train-images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test-images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test-labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83fd310"),
    },
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    captions=FASHION_CAPTIONS,
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="apt install dataset-fashion-mnist",
)

MNIST = IdxSource(
    name="mnist",
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    files={
        "train-images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test-images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        "test-labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    class_names=tuple(str(d) for d in range(10)),
    captions=ClassCaptions(tuple((f"a handwritten digit {d}",) for d in range(10))),
)


def search_dirs(source: IdxSource, data_dir: str | Path | None, cache_dir: Path) -> list[Path]:
    """Folders searched for the files, in order: data_dir (and data_dir/NAME), $GENPIX_DATA_DIR/NAME,
    the system folders, then cache_dir/NAME. A data_dir that does not exist is an error, not skipped."""
    dirs = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataError(f"the data folder {data_dir} does not exist")
        dirs += [data_dir, data_dir / source.name]
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]).expanduser() / source.name)
    dirs += [Path(d) for d in source.system_dirs]
    dirs.append(cache_dir / source.name)
    return dirs


def _find(filename: str, dirs: list[Path]) -> Path | None:
    """The first existing `filename` (or its uncompressed name without .gz) in `dirs`."""
    names = [filename, filename.removesuffix(".gz")]
    for folder in dirs:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def locate_files(
    source: IdxSource,
    parts: list[str],
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    base_url: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> dict[str, Path]:
    """Path of each needed part, found locally or downloaded into `cache_dir/NAME` (MD5-checked).

    Raises DataError saying which files are missing and where to put them when they cannot be downloaded.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dirs = search_dirs(source, data_dir, cache)
    found = {part: _find(source.files[part][0], dirs) for part in parts}
    missing = [part for part, path in found.items() if path is None]
    url = base_url if base_url is not None else source.base_url
    for part in missing:
        filename, md5 = source.files[part]
        try:
            dest = cache / source.name / filename
            found[part] = download(f"{url.rstrip('/')}/{filename}", dest, md5, timeout=timeout)
        except DownloadError as exc:
            names = ", ".join(source.files[p][0] for p in missing if found[p] is None)
            places = ["the data_dir (--data-dir) folder", f"${DATA_DIR_ENV}/{source.name}", str(cache / source.name)]
            hint = f", or run `{source.install_hint}`" if source.install_hint else ""
            raise DataError(f"{source.name}: missing {names} and the download failed ({exc}); "
                            f"put the files in {', '.join(places)}{hint}") from exc
    return {part: path for part, path in found.items() if path is not None}


def _read_part(
    source: IdxSource, paths: dict[str, Path], split: str, count: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 `(N, 28, 28)` and labels int64 `(N,)` of one split's files, checked against each other."""
    images_path, labels_path = (paths[part] for part in _PARTS[split])
    images = read_idx(images_path, ndim=3, count=count)
    labels = read_idx(labels_path, ndim=1, count=count).astype(np.int64)
    if images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise DataError(f"{images_path}: expected uint8 square images, got {images.dtype} {images.shape[1:]}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(source.class_names)):
        raise DataError(f"{labels_path}: labels must lie in [0, {len(source.class_names)})")
    return images, labels


def load_idx_dataset(
    source: IdxSource,
    split: Split = "train",
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    base_url: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> ImageDataset:
    """Load an IDX dataset at its native size (1, 28, 28), values in [0, 255].

    train = the 60k train files, test = the 10k t10k files, all = train then test; `limit` keeps the
    first images (reading only those bytes). `cache_dir` and `base_url` override the download target
    and source (tests point them at temporary folders and loopback servers).
    """
    splits = ["train", "test"] if split == "all" else [split]
    parts = [part for s in splits for part in _PARTS[s]]
    paths = locate_files(source, parts, data_dir=data_dir, cache_dir=cache_dir, base_url=base_url, timeout=timeout)
    images, labels = [], []
    for s in splits:
        remaining = None if limit is None else limit - sum(len(x) for x in labels)
        if remaining is not None and remaining <= 0:
            break
        part_images, part_labels = _read_part(source, paths, s, remaining)
        images.append(part_images)
        labels.append(part_labels)
    all_images = np.concatenate(images)[:, None]
    all_labels = np.concatenate(labels)
    captions = source.captions.captions(all_labels)
    return make_dataset(all_images, all_labels, source.class_names, captions, source.name, split)
