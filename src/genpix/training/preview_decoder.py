"""Training task distilling a tiny preview decoder (TAESD's architecture, models/taesd.py) from a
KL autoencoder's full decoder, as TAESD was distilled from Stable Diffusion's VAE (madebyollin/taesd):
the student reads the diffusion latent z0 = scaling_factor * z, z ~ q(z|x) of a training image,
and learns the teacher's picture D(z) in [0, 1] under a mean squared error (the PSNR it is judged
by); the teacher stays frozen. At the end: PSNR of the student against the teacher on held-out
posterior means, and against the images themselves for both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from genpix.config import check, from_dict, to_dict
from genpix.data import ImageDataset
from genpix.errors import GenpixError
from genpix.metrics.psnr import psnr
from genpix.io.images import make_grid, to_pil
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.taesd import TinyDecoder, TinyDecoderConfig
from genpix.training.families import Family
from genpix.training.trained_models import load_teacher
from genpix.training.flags import Flag
from genpix.training.task import Batch
from genpix.training.ddpm import optimiser_step

@dataclass(frozen=True)
class PreviewDecoderTrainingConfig:
    """The ``model`` section of a preview-decoder run: the student's width and stages (one
    upsampling between stages, so len(blocks) - 1 = log2 of the teacher's factor) and the teacher."""

    image_size: int = 32  # H = W of the images (set from the data)
    channels: int = 3  # image channels (set from the data)
    width: int = 32  # the student's channels (TAESD: 64)
    blocks: tuple[int, ...] | None = None  # Blocks per stage (default: 1 per stage, 2 in the first)
    first_stage: AutoencoderConfig | None = None  # the teacher, with its measured scaling_factor

    def __post_init__(self) -> None:
        check(self.width >= 1, f"--width must be positive, got {self.width}")
        if self.first_stage is not None:
            check(self.first_stage.out_channels == self.channels,
                  f"the autoencoder makes {self.first_stage.out_channels}-channel images, the data has "
                  f"{self.channels} (use --channels {self.first_stage.out_channels})")
            self.student()  # validates the stages against the teacher's factor

    def student(self) -> TinyDecoderConfig:
        check(self.first_stage is not None, "the preview decoder needs its autoencoder (--autoencoder)")
        levels = int(self.first_stage.downsampling_factor).bit_length()  # f = 2 ** (levels - 1)
        blocks = self.blocks or (2, *([1] * (levels - 1)))
        check(len(blocks) == levels, f"--blocks needs {levels} stages for the autoencoder's factor "
                                     f"{self.first_stage.downsampling_factor}, got {len(blocks)}")
        return TinyDecoderConfig(latent_channels=self.first_stage.latent_channels,
                                 out_channels=self.first_stage.out_channels, channels=self.width, blocks=tuple(blocks))


class PreviewDecoderTask:
    family = "preview-decoder"

    def __init__(self, config: PreviewDecoderTrainingConfig, *, lr: float, device: torch.device, seed: int = 0,
                 teacher: AutoencoderKL | None = None) -> None:
        """``teacher``: the full autoencoder (a new run); on resume it is rebuilt from
        ``config.first_stage`` and its weights come back with the checkpoint."""
        if teacher is not None:
            config = replace(config, first_stage=teacher.config)
        if config.first_stage is None:
            raise GenpixError("--autoencoder is required: an autoencoder run or a latent diffusion model folder")
        self.config, self.device = config, device
        self.teacher = (teacher or AutoencoderKL(config.first_stage)).to(device).eval().requires_grad_(False)
        self.student = TinyDecoder(config.student()).to(device)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=lr)
        self.forward_pass = self.student  # under torchrun, through DDP

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"preview_decoder": self.student, "first_stage": self.teacher}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def distribute(self, wrap) -> None:
        self.forward_pass = wrap(self.student)

    @torch.no_grad()
    def pairs(self, images: torch.Tensor, eps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(diffusion latents z0 = scaling_factor z, the teacher's pictures D(z) in [0, 1]);
        z = mean + std eps, or the posterior mean when ``eps`` is None."""
        posterior = self.teacher.encode(images * 2 - 1)
        z = posterior.mean if eps is None else posterior.mean + posterior.std * eps
        return z * self.config.first_stage.scaling_factor, self.teacher.decode(z).add(1).div(2).clamp(0, 1)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.student.train()
        f = self.config.first_stage.downsampling_factor
        eps = batch.randn(self.config.first_stage.latent_channels, self.config.image_size // f,
                          self.config.image_size // f)
        z0, target = self.pairs(batch.images, eps)
        loss = (self.forward_pass(z0) - target).square().mean()
        return optimiser_step(loss, self.optimizer, self.student, grad_clip=0)

    @torch.no_grad()
    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        """Rows of 8: images, the full decoder's pictures, the preview decoder's."""
        self.student.eval()
        z0, full = self.pairs(batch.images[:8], None)
        tiny = self.student(z0).clamp(0, 1)
        return {"previews": make_grid(to_pil(torch.cat([batch.images[:8], full, tiny]).float().cpu()),
                                      columns=min(8, z0.shape[0]))}

    @torch.no_grad()
    def evaluate(self, data: ImageDataset, limit: int = 256) -> dict[str, float]:
        """Mean PSNR (dB) on up to ``limit`` held-out images: preview vs full decoder, and each vs the image."""
        self.student.eval()
        against_full, tiny_vs_image, full_vs_image = [], [], []
        for start in range(0, min(limit, len(data)), 64):
            x = data.images[start : min(start + 64, limit)].to(self.device).float() / 255
            z0, full = self.pairs(x, None)
            tiny = self.student(z0).clamp(0, 1)
            against_full.append(psnr(full, tiny))
            tiny_vs_image.append(psnr(x, tiny))
            full_vs_image.append(psnr(x, full))
        return {"psnr_vs_full_decoder": torch.cat(against_full).mean().item(),
                "psnr_preview_vs_image": torch.cat(tiny_vs_image).mean().item(),
                "psnr_full_vs_image": torch.cat(full_vs_image).mean().item(), "images": min(limit, len(data))}


def _task_options(options: Mapping[str, Any], train_config: Any) -> dict[str, Any]:
    """The teacher: --autoencoder for a new run (a run folder, model folder or bundled name); on
    --resume the run's own, from its checkpoint."""
    if options.get("resume"):
        if options.get("autoencoder") is not None:
            raise GenpixError("--resume: the run keeps the autoencoder it was started with; leave --autoencoder out")
        return {}
    if options.get("autoencoder") is None:
        raise GenpixError("--autoencoder is required: an autoencoder run or a latent diffusion model (e.g. shapes-ldm)")
    return {"teacher": load_teacher(options["autoencoder"])}


FAMILY = Family(
    "preview-decoder", "tiny preview decoder (TAESD architecture) distilled from an autoencoder's decoder",
    PreviewDecoderTrainingConfig, PreviewDecoderTask, default_lr=1e-3, train_defaults={"lr_schedule": "cosine"},
    hidden=frozenset({"first_stage"}),  # from --autoencoder
    options=(Flag("autoencoder", str, "the teacher: an autoencoder run folder, or a latent diffusion model folder "
                                      "or bundled name (its first stage), e.g. shapes-ldm; required for a new run",
                  metavar="RUN"),),
    task_options=_task_options,
    help={"width": "the tiny decoder's channels (TAESD: 64)",
          "blocks": "blocks per stage, one stage per upsampling plus one (default 2,1,1 for f = 4)"})
