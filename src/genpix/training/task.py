"""What a model family gives the shared training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from genpix.data import ImageDataset


@dataclass
class Batch:
    """One training batch on the training device."""

    images: torch.Tensor  # float (B, C, H, W) in [0, 1]
    labels: torch.Tensor | None  # int64 (B,) or None
    captions: list[str] | None


class Task(Protocol):
    """A family's networks, optimisers and step; the trainer owns the loop, logs and files."""

    family: str

    def modules(self) -> dict[str, torch.nn.Module]:
        """Networks by role; all are saved in model.safetensors and restored on resume."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by name; their ``lr`` is the base rate the trainer's schedule scales."""

    def model_config(self) -> dict[str, Any]:
        """The JSON ``model`` section of config.json: enough to rebuild the networks."""

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward, backward, optimiser steps; returns scalar metrics (``loss`` first)."""

    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        """Pictures to write every ``sample_every`` steps: name -> image (e.g. a sample grid)."""

    def evaluate(self, data: ImageDataset) -> dict[str, float]:
        """Held-out figures printed at the end of training (e.g. PSNR, SSIM)."""

    # Optional: ``diagnose(step, data, out) -> dict | None``, called after every step; a record it
    # returns is appended to out/diagnostics.jsonl (e.g. the GAN's mode-collapse figures).
