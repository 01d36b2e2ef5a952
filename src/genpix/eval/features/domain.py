"""Domain feature networks: a small CNN classifier genpix trains itself on a labelled dataset.

Its penultimate layer gives the features for Fréchet distance, KID and precision/recall, its softmax
the class probabilities for the Inception Score and class coverage: the "Fréchet LeNet distance" idea
(dfaroughy/FID-MNIST), fully offline and cheap on a CPU. The numbers measure the same things as
Inception FID but on another scale: they are not comparable to Inception FID or to published figures.

Saved as FILE.safetensors (weights) with FILE.json beside it (config, classes, test accuracy).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from genpix.config import ConfigError, check, from_dict, to_dict
from genpix.errors import GenpixError
from genpix.io.atomic import write_atomic
from genpix.version import __version__

NOTE = "domain features, not comparable to Inception FID"
KIND = "genpix-domain-features"


@dataclass(frozen=True)
class DomainNetConfig:
    image_size: int = 28  # H = W the network takes; other sizes are resized to it
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32, 64)  # 3x3 conv + ReLU + 2x2 max-pool stages
    feature_dim: int = 128  # the penultimate (feature) layer

    def __post_init__(self) -> None:
        check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        check(self.num_classes >= 2, f"a classifier needs at least 2 classes, got {self.num_classes}")
        check(len(self.widths) >= 1 and all(w >= 1 for w in self.widths), "widths must be positive")
        check(self.feature_dim >= 2, f"feature_dim must be at least 2, got {self.feature_dim}")
        check(self.image_size >= 2 ** len(self.widths),
              f"image_size {self.image_size} is too small for {len(self.widths)} pooling stages")


class DomainNet(nn.Module):
    """x (B, C, S, S) in [0, 1] -> (features (B, feature_dim) >= 0, logits (B, num_classes))."""

    def __init__(self, config: DomainNetConfig) -> None:
        super().__init__()
        self.config = config
        layers, channels = [], config.channels
        for width in config.widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.conv = nn.Sequential(*layers)
        self.features = nn.Linear(channels, config.feature_dim)
        self.classifier = nn.Linear(config.feature_dim, config.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(2 * x - 1).mean(dim=(2, 3))  # global average pool: (B, widths[-1])
        features = F.relu(self.features(h))  # (B, feature_dim)
        return features, self.classifier(features)


@dataclass(frozen=True)
class DomainFeatures:
    network: DomainNet
    class_names: tuple[str, ...]
    info: dict[str, Any]  # the JSON beside the weights


def json_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_domain_features(path: str | Path, network: DomainNet, class_names: tuple[str, ...],
                         info: dict[str, Any]) -> Path:
    """Write path (.safetensors) and path.json atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    write_atomic(path, lambda p: save_file(state, str(p), metadata={"kind": KIND}))
    meta = {"genpix": __version__, "kind": KIND, "note": NOTE, "model": to_dict(network.config),
            "class_names": list(class_names), **info}
    write_atomic(json_path(path), lambda p: p.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8"))
    return path


def load_domain_features(path: str | Path) -> DomainFeatures:
    path = Path(path).expanduser()
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    meta_path = json_path(path)
    if not path.is_file() or not meta_path.is_file():
        raise GenpixError(f"no domain feature network at {path} (needs {path.name} and {meta_path.name}): "
                          f"make one with `genpix eval train-features --data DATASET --out {path}`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("kind") != KIND:
            raise GenpixError(f"{meta_path} is not a genpix domain feature network")
        config = from_dict(DomainNetConfig, meta["model"], where=f"{meta_path} model")
        class_names = tuple(meta["class_names"])
        network = DomainNet(config)
        network.load_state_dict(load_file(str(path)))
    except (json.JSONDecodeError, KeyError, RuntimeError, OSError) as error:
        raise GenpixError(f"{path}: unreadable domain feature network ({type(error).__name__}: {error})") from None
    if len(class_names) != config.num_classes:
        raise ConfigError(f"{meta_path}: {len(class_names)} class names for {config.num_classes} classes")
    return DomainFeatures(network.eval().requires_grad_(False), class_names, meta)


@dataclass(frozen=True)
class DomainTrainConfig:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be at least 1")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")


def accuracy(network: DomainNet, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
             batch_size: int = 500) -> float:
    """Top-1 accuracy on uint8 images (N, C, H, W)."""
    correct = 0
    with torch.no_grad():
        for x, y in zip(images.split(batch_size), labels.split(batch_size)):
            correct += int((network(x.to(device).float() / 255)[1].argmax(1).cpu() == y).sum())
    return correct / len(labels)


def train_domain_net(train_images: torch.Tensor, train_labels: torch.Tensor, class_names: tuple[str, ...],
                     config: DomainTrainConfig, device: torch.device, progress=None) -> DomainNet:
    """Cross-entropy training on uint8 images (N, C, S, S) with labels (N,); returns the network in eval mode.

    ``progress(step, loss)`` is called every 100 steps when given.
    """
    if train_labels is None or len(class_names) < 2:
        raise GenpixError("training domain features needs a labelled dataset with at least 2 classes")
    torch.manual_seed(config.seed)
    net_config = DomainNetConfig(image_size=train_images.shape[-1], channels=train_images.shape[1],
                                 num_classes=len(class_names))
    network = DomainNet(net_config).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    order, cursor, n = torch.randperm(len(train_labels), generator=generator), 0, len(train_labels)
    for step in range(1, config.steps + 1):
        if cursor + config.batch_size > n:  # a new epoch: a fresh permutation
            order, cursor = torch.randperm(n, generator=generator), 0
        rows = order[cursor:cursor + config.batch_size]
        cursor += config.batch_size
        x = train_images[rows].to(device).float() / 255
        loss = F.cross_entropy(network(x)[1], train_labels[rows].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress and (step % 100 == 0 or step == config.steps):
            progress(step, loss.item())
    return network.eval().requires_grad_(False)


def train_and_save(spec: str, out: str | Path, config: DomainTrainConfig, device: torch.device,
                   progress=None) -> tuple[Path, dict[str, Any]]:
    """Train on `spec`'s train split, measure test accuracy, and save; returns (path, info)."""
    from genpix.data import load_dataset

    train = load_dataset(spec, split="train")
    test = load_dataset(spec, split="test", image_size=train.image_size, channels=train.channels)
    if train.labels is None:
        raise GenpixError(f"{spec} has no class labels: domain features are trained as a classifier")
    start = time.perf_counter()
    network = train_domain_net(train.images, train.labels, train.class_names, config, device, progress)
    seconds = time.perf_counter() - start
    info = {"data": {"spec": spec, "image_size": train.image_size, "channels": train.channels,
                     "train_images": len(train)},
            "train": to_dict(config), "train_seconds": round(seconds, 1),
            "test_accuracy": round(accuracy(network, test.images, test.labels, device), 4)}
    return save_domain_features(out, network.cpu(), train.class_names, info), info
