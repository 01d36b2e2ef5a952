"""Feature extractors for the distribution metrics, chosen by a spec string.

    inception           InceptionV3 pool3 (2048-d), pytorch-fid's weights file: the standard FID
    domain              the domain classifier genpix trained for the real images' dataset
    domain:FILE         a domain classifier file (`genpix eval train-features --out FILE`)
    torchscript:PATH    any TorchScript model mapping (B, C, H, W) in [0, 1] to (B, d) features

Every extractor carries a note printed beside its numbers: only Inception features give numbers
comparable with published FID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from genpix.errors import GenpixError

SPECS = ("inception", "domain", "domain:FILE", "torchscript:PATH")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's RGB -> L


@dataclass(frozen=True)
class FeatureExtractor:
    """A network x (B, C, H, W) float in [0, 1] -> (features (B, d), logits (B, K) or None)."""

    name: str
    note: str  # shown beside every figure computed with these features
    network: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    channels: int | None  # channels it takes (None: any, the images' own)
    image_size: int | None  # side it takes (None: any); with resizes_input, the side it resizes to itself
    class_names: tuple[str, ...] | None = None  # the classes its logits name (labelled domains)
    device: torch.device = torch.device("cpu")
    resizes_input: bool = False  # True: takes any size and resizes to image_size inside (inception, 299)


def conform(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Float images (B, C, H, W) in [0, 1] -> (B, channels, size, size): grey repeated to RGB, RGB to
    luma; resized bilinearly (antialiased when shrinking)."""
    if x.shape[1] != channels:
        x = x.repeat(1, 3, 1, 1) if channels == 3 else (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < max(x.shape[-2:])).clamp(0, 1)
    return x


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1]."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


@dataclass(frozen=True)
class Extracted:
    features: torch.Tensor  # (N, d) float64, CPU
    probs: torch.Tensor | None  # (N, K) float64 softmax of the logits, or None


def extract(extractor: FeatureExtractor, images: torch.Tensor, channels: int, size: int,
            batch_size: int = 100) -> Extracted:
    """Features (and class probabilities) of images (N, C, H, W), uint8 or float in [0, 1], conformed
    to (channels, size) batch by batch."""
    features, probs = [], []
    with torch.no_grad():
        for batch in images.split(batch_size):
            x = conform(as_float(batch), channels, size).to(extractor.device)
            f, logits = extractor.network(x)
            features.append(f.reshape(f.shape[0], -1).double().cpu())
            if logits is not None:
                probs.append(logits.double().softmax(1).cpu())
    return Extracted(torch.cat(features), torch.cat(probs) if probs else None)


def default_domain_path(dataset: str) -> Path:
    """Where `genpix eval train-features --data DATASET` puts its network when no --out is given."""
    from genpix.data import DATASETS
    from genpix.data.download import default_cache_dir

    # a folder is named by its absolute path, so `./photos` and `/home/me/photos` share one network
    name = dataset if dataset in DATASETS else str(Path(dataset).expanduser().resolve())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip("/")) or "dataset"
    return default_cache_dir() / "features" / f"{slug}.safetensors"


def load_extractor(spec: str, *, dataset: str | None = None, inception_weights: str | Path | None = None,
                   download: bool = False, inception_url: str | None = None,
                   device: torch.device = torch.device("cpu")) -> FeatureExtractor:
    """The extractor named by `spec` (see the module docstring); `dataset` picks the default domain net."""
    kind, _, arg = spec.partition(":")
    if kind == "inception" and not arg:
        from genpix.eval.features.inception import build_inception, load_inception_state

        path = resolve_inception_weights(inception_weights, download=download, url=inception_url)
        return inception_extractor(build_inception(load_inception_state(path), source=str(path)), device)
    if kind == "domain":
        from genpix.eval.features.domain import NOTE, load_domain_features

        if not arg:
            if dataset is None:
                raise GenpixError("--features domain needs a labelled dataset as --real, or pass domain:FILE")
            path = default_domain_path(dataset)
            if not path.is_file():
                raise GenpixError(f"no domain feature network for {dataset} yet: run `genpix eval train-features "
                                  f"--data {dataset}` (a minute or two on a CPU), or pass --features "
                                  f"domain:FILE|inception|torchscript:PATH")
            arg = str(path)
        loaded = load_domain_features(arg)
        config = loaded.network.config
        name = f"domain:{Path(arg).name} ({loaded.info.get('data', {}).get('spec', '?')})"
        return FeatureExtractor(name, NOTE, loaded.network.to(device), config.channels, config.image_size,
                                loaded.class_names, device)
    if kind == "torchscript" and arg:
        return load_torchscript(arg, device)
    raise GenpixError(f"unknown --features {spec!r}; choose one of: {', '.join(SPECS)}")


def inception_extractor(network: torch.nn.Module, device: torch.device = torch.device("cpu")) -> FeatureExtractor:
    """pytorch-fid's InceptionV3 (``build_inception``) as an extractor: RGB at any size, resized to
    299x299 inside the network, as pytorch-fid does."""
    from genpix.eval.features.inception import INPUT_SIZE

    return FeatureExtractor("inception-v3-pool3", "InceptionV3 pool3 (pytorch-fid weights), comparable to "
                            "pytorch-fid at the same images and N", network.to(device), 3, INPUT_SIZE, None,
                            device, resizes_input=True)


def load_torchscript(path: str | Path, device: torch.device) -> FeatureExtractor:
    """A user's TorchScript model: its output (B, d, ...) is flattened to features; a tuple output is
    (features, logits)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GenpixError(f"no TorchScript file at {path}: pass --features torchscript:PATH to a file "
                          f"saved with torch.jit.save")
    try:
        module = torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as error:
        raise GenpixError(f"{path} is not a TorchScript model ({str(error).splitlines()[0]})") from None

    def network(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = module(x)
        if isinstance(out, (tuple, list)):
            return out[0], (out[1] if len(out) > 1 and out[1].ndim == 2 else None)
        return out, None

    return FeatureExtractor(f"torchscript:{path.name}", f"user features from {path.name}, comparable only with "
                            f"numbers from the same model", network, None, None, None, device)


def resolve_inception_weights(path: str | Path | None, *, download: bool = False, url: str | None = None) -> Path:
    """The weights file to use: `path`, else pytorch-fid's torch hub cache location; with `download`,
    fetched (SHA-256-checked) into that place when missing."""
    from genpix.eval.features.inception import (WEIGHTS_NAME, WEIGHTS_SHA256_PREFIX, WEIGHTS_URL,
                                                missing_weights_message)

    target = Path(path).expanduser() if path else torch_hub_checkpoints() / WEIGHTS_NAME
    if target.is_file():
        return target
    if not download:
        raise GenpixError(missing_weights_message(target, given=bool(path)))
    from genpix.data.download import download as fetch

    return fetch(url or WEIGHTS_URL, target, WEIGHTS_SHA256_PREFIX, algorithm="sha256", timeout=120)


def torch_hub_checkpoints() -> Path:
    """$TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...), where pytorch-fid caches its weights."""
    import os

    home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    return Path(home) / "hub" / "checkpoints"
