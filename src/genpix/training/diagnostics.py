"""Mode-collapse diagnostics for a generator (seed 003: "模式崩溃", the generator "only learns to
create a subset" that fools the discriminator).

Two figures on one fixed batch of samples (fixed z, so they read from step to step):

- diversity: the mean pairwise L2 distance between the samples (pixels in [0, 1]), as a fraction
  of the same figure on as many real images; a collapsed generator draws near-copies, so the
  fraction falls towards 0. Below ``COLLAPSE_RATIO`` a warning line is printed.
- coverage: the histogram of the samples' classes under a small classifier trained quickly on
  the dataset's labels (where the dataset has labels); missing classes are missing modes. The
  classifier's weights are cached in the run folder (``diagnostics/classifier.safetensors``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from genpix.data import ImageDataset
from genpix.io.atomic import write_atomic
from genpix.training.batches import batch_indices, derive_seed

COLLAPSE_RATIO = 0.3  # warn when the samples' pairwise distance is below 30% of the real data's
CLASSIFIER_NAME = "classifier.safetensors"


class ModeCollapseWarning(UserWarning):
    """The generator's samples have become much less diverse than the data."""


class SmallClassifier(nn.Module):
    """Two strided convolutions and a linear layer: (B, C, H, W) in [0, 1] -> class logits (B, K)."""

    def __init__(self, channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        side = (image_size + 3) // 4  # two stride-2 convolutions with padding 1
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean L2 distance over all pairs i < j of a batch (N, ...), N >= 2."""
    return torch.pdist(x.flatten(1).double()).mean().item()


def train_classifier(data: ImageDataset, *, seed: int = 0, steps: int = 300, batch_size: int = 128,
                     device: torch.device | str = "cpu") -> SmallClassifier:
    """Adam on cross-entropy for ``steps`` batches of ``data`` (which must have labels)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0xC1A5))
        classifier = SmallClassifier(data.channels, data.image_size, len(data.class_names)).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=2e-3)
    classifier.train()
    for step in range(steps):
        idx = batch_indices(len(data), min(batch_size, len(data)), seed ^ 0xC1A5, step)
        x = data.images[idx].to(device).float() / 255
        loss = F.cross_entropy(classifier(x), data.labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return classifier.eval()


def load_or_train_classifier(data: ImageDataset, path: Path, *, seed: int = 0,
                             device: torch.device | str = "cpu") -> SmallClassifier:
    """The classifier cached at ``path`` (safetensors), trained and written there when absent."""
    classifier = SmallClassifier(data.channels, data.image_size, len(data.class_names)).to(device)
    if path.is_file():
        state = load_file(path)
        own = classifier.state_dict()
        if state.keys() == own.keys() and all(state[k].shape == own[k].shape for k in own):
            classifier.load_state_dict(state)
            return classifier.eval()
        warnings.warn(f"{path} does not fit this dataset; training a new classifier", stacklevel=2)
    classifier = train_classifier(data, seed=seed, device=device)
    state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
    write_atomic(path, lambda p: save_file(state, p))
    return classifier


class ModeCollapseDiagnostics:
    """Diversity and class coverage of ``sample(z, labels)`` (images in [0, 1]) on a fixed batch."""

    def __init__(self, sample: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                 latent_dim: int, num_classes: int = 0, *, n: int = 256, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.sample, self.n, self.seed, self.device = sample, n, seed, device
        generator = torch.Generator().manual_seed(derive_seed(seed, 0xD1A6))
        self.z = torch.randn(n, latent_dim, generator=generator)
        # a class-conditional generator is asked for every class equally often
        self.labels = torch.arange(n).remainder(num_classes).to(device) if num_classes else None
        self.real_distance: float | None = None
        self.classifier: SmallClassifier | None = None

    def _prepare(self, data: ImageDataset, out: Path) -> None:
        """The real data's pairwise distance and the classifier, once per run."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, 0xEA1))
        pick = torch.randperm(len(data), generator=generator)[: self.n]
        self.real_distance = mean_pairwise_distance(data.images[pick].float() / 255)
        if data.labels is not None and data.class_names and len(data.class_names) >= 2:
            self.classifier = load_or_train_classifier(data, out / "diagnostics" / CLASSIFIER_NAME,
                                                       seed=self.seed, device=self.device)

    def __call__(self, step: int, data: ImageDataset, out: Path) -> dict[str, Any]:
        if self.real_distance is None:
            self._prepare(data, out)
        with torch.no_grad():
            return self._measure(step)

    def _measure(self, step: int) -> dict[str, Any]:
        samples = torch.cat([self.sample(z, None if labels is None else labels)
                             for z, labels in _chunks(self.z, self.labels)]).cpu()
        distance = mean_pairwise_distance(samples)
        ratio = distance / max(self.real_distance, 1e-12)
        record: dict[str, Any] = {"pairwise_distance": round(distance, 4),
                                  "real_pairwise_distance": round(self.real_distance, 4),
                                  "diversity_ratio": round(ratio, 4)}
        if self.classifier is not None:
            logits = self.classifier(samples.to(self.device)).cpu()
            counts = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
            p = counts.double() / counts.sum()
            entropy = max(0.0, -(p[p > 0] * p[p > 0].log2()).sum().item())
            record.update({"class_histogram": counts.tolist(),
                           "classes_covered": int((counts > 0).sum()),
                           "class_entropy_bits": round(entropy, 4),
                           "max_entropy_bits": round(math.log2(len(counts)), 4)})
        if ratio < COLLAPSE_RATIO:
            warnings.warn(f"step {step}: possible mode collapse: the samples' mean pairwise distance "
                          f"is {ratio:.0%} of the real data's ({distance:.3g} vs {self.real_distance:.3g})",
                          ModeCollapseWarning, stacklevel=2)
        return record


def _chunks(z: torch.Tensor, labels: torch.Tensor | None, size: int = 128):
    for start in range(0, len(z), size):
        yield z[start : start + size], None if labels is None else labels[start : start + size]
