"""What a model family gives the shared training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from PIL import Image

from genpix.data import ImageDataset


@dataclass
class Batch:
    """One training batch on the training device (under torchrun: this rank's rows of it)."""

    images: torch.Tensor  # float (B, C, H, W) in [0, 1]
    labels: torch.Tensor | None  # int64 (B,) or None
    captions: list[str] | None
    generator: torch.Generator | None = None  # seeded per step from (seed, step), the same on every rank
    offset: int = 0  # row of images[0] in the global batch (rank * B)
    global_size: int | None = None  # rows of the global batch (B * world size); None: B
    indices: torch.Tensor | None = None  # (B,) dataset rows of the images, for per-image caches; None: unknown

    def randn(self, *shape: int) -> torch.Tensor:
        """N(0, I) noise (B, *shape), one row per image, drawn for the whole global batch and
        sliced to this rank's rows: a run split over N processes uses the noise one process would."""
        return self._rows(torch.randn, shape)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) values (B, *shape), sliced from the global draw like :meth:`randn`."""
        return self._rows(torch.rand, shape)

    def _rows(self, draw: Callable[..., torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        n = self.images.shape[0]
        full = draw(self.global_size or n, *shape, generator=self.generator, device=self.images.device)
        return full[self.offset : self.offset + n]


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


class Distributable(Protocol):
    """A task that can train under torchrun (every family should be one).

    ``distribute(wrap)`` is called once before the first step when the run has several processes,
    and again with the identity ``wrap`` after the last. ``wrap(module, method="forward")`` returns
    a callable running ``module.<method>`` through DistributedDataParallel: keep it and make
    ``train_step`` call it instead of the module, once per network per forward pass (e.g. the VAE
    wraps ``(vae, "loss")``, a GAN ``generator`` and ``discriminator``, a diffusion model its
    U-Net; never an EMA copy). ``modules()`` keeps returning the plain networks, so checkpoints
    hold no rank-specific state. Draw per-image noise with ``batch.randn`` to make a run on N
    processes reproduce the single-process one; the global RNG (``torch.randn``) is seeded per step
    with the rank folded in, so each rank draws different values.
    """

    def distribute(self, wrap: Callable[..., Callable[..., Any]]) -> None: ...
