"""Training task of the upscaler family: a small SRVGGNetCompact or RRDBNet learns to undo a
degradation (data/degradations.py: bicubic downscale, or blur + downscale + noise + JPEG) with the
L1 loss of Real-ESRGAN's PSNR-oriented stage (Wang et al. 2021, section 4.1), pairs made on the fly.

Besides the trainer's model folder, the run writes ``genpix-upscaler-xS.pth`` (``{"params_ema": ...}``,
readable with ``torch.load(weights_only=True)``) and ``genpix-upscaler-xS.safetensors`` in BasicSR's
layout at every checkpoint: drop either into genpix's ``--upscalers-dir`` or sd-webui's ``models/ESRGAN``.
Held-out figures: PSNR / SSIM of the network and of bicubic upscaling on the same degraded inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image

from genpix.config import check, to_dict
from genpix.data import ImageDataset
from genpix.data.degradations import DegradationConfig, degrade
from genpix.errors import GenpixError
from genpix.metrics.psnr import psnr
from genpix.metrics.ssim import ssim
from genpix.io.images import make_grid, to_pil
from genpix.io.upscaler_file import save_upscaler
from genpix.models.rrdbnet import RRDBNet, RRDBNetConfig
from genpix.models.srvgg import SRVGGNetCompact, SRVGGNetConfig
from genpix.training.families import Family
from genpix.training.task import Batch
from genpix.training.ddpm import optimiser_step


@dataclass(frozen=True)
class UpscalerConfig:
    image_size: int = 28  # H = W of the clean pictures, a multiple of scale
    channels: int = 1  # 1 or 3
    scale: Literal[2, 4] = 4  # upscaling factor
    architecture: Literal["compact", "rrdb"] = "compact"  # SRVGGNetCompact or RRDBNet
    num_features: int = 32  # channels of the hidden convs (nf)
    num_conv: int = 8  # compact: hidden convs
    num_blocks: int = 2  # rrdb: RRDBs
    growth_channels: int = 16  # rrdb: gc of the dense blocks
    degradation: Literal["bicubic", "real"] = "real"
    blur_sigma_max: float = 1.2
    noise_max: float = 0.04
    jpeg_quality_min: int = 60

    def __post_init__(self) -> None:
        check(self.image_size % self.scale == 0 and self.image_size // self.scale >= 4,
              f"image size {self.image_size} must be a multiple of the scale {self.scale} and at least "
              f"{4 * self.scale} (use --image-size)")
        self.network_config()  # the network's own checks
        self.degradation_config()

    def network_config(self) -> SRVGGNetConfig | RRDBNetConfig:
        if self.architecture == "compact":
            return SRVGGNetConfig(self.scale, self.channels, self.num_features, self.num_conv)
        return RRDBNetConfig(self.scale, self.channels, self.num_features, self.num_blocks, self.growth_channels)

    def degradation_config(self) -> DegradationConfig:
        return DegradationConfig(self.degradation, self.blur_sigma_max, self.noise_max, self.jpeg_quality_min)


def build_network(config: UpscalerConfig) -> torch.nn.Module:
    net = config.network_config()
    return SRVGGNetCompact(net) if isinstance(net, SRVGGNetConfig) else RRDBNet(net)


def bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


class UpscalerTask:
    family = "upscaler"

    def __init__(self, config: UpscalerConfig, *, lr: float, device: torch.device, seed: int = 0,
                 export_every: int = 500, total_steps: int | None = None) -> None:
        self.config, self.device = config, device
        self.degradation = config.degradation_config()
        self.net = build_network(config).to(device)
        self.forward = self.net  # under torchrun: through DDP (distribute)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, betas=(0.9, 0.99))
        self.export_every, self.total_steps, self.seed = export_every, total_steps, seed

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"upscaler": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def distribute(self, wrap) -> None:
        self.forward = wrap(self.net)

    def pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(low-resolution input, clean target); colour pictures have their channels reversed at
        random (sd-webui feeds BGR, Real-ESRGAN RGB: the network learns both)."""
        hr = batch.images
        if hr.shape[1] == 3:
            flip = batch.rand(1)[:, 0] < 0.5
            hr = torch.where(flip[:, None, None, None], hr.flip(1), hr)
        return degrade(hr, self.config.scale, self.degradation, batch.rand, batch.randn), hr

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.net.train()
        lr_image, hr = self.pairs(batch)
        loss = F.l1_loss(self.forward(lr_image), hr)
        return optimiser_step(loss, self.optimizer, self.net, grad_clip=0)

    @torch.no_grad()
    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        """Rows: bicubic, the network, the clean picture (8 each)."""
        self.net.eval()
        lr_image, hr = self.pairs(batch)
        lr_image, hr = lr_image[:8], hr[:8]
        rows = torch.cat([bicubic(lr_image, self.config.scale), self.net(lr_image).clamp(0, 1), hr])
        return {"upscaled": make_grid(to_pil(rows), columns=len(hr))}

    def diagnose(self, step: int, data: ImageDataset, out: Path) -> None:
        """Export the sd-webui-readable files with every checkpoint and at the end."""
        if step % self.export_every == 0 or step == self.total_steps:
            for suffix in (".pth", ".safetensors"):
                save_upscaler(self.net, Path(out) / f"genpix-upscaler-x{self.config.scale}{suffix}")

    def evaluate(self, data: ImageDataset) -> dict[str, float]:
        return upscale_metrics(self.net, data, self.config, self.device, seed=self.seed)


@torch.no_grad()
def upscale_metrics(net: torch.nn.Module, data: ImageDataset, config: UpscalerConfig, device: torch.device,
                    seed: int = 0, batch_size: int = 250) -> dict[str, float]:
    """Mean PSNR (dB) / SSIM over ``data`` of the network and of bicubic upscaling, on the same
    degraded inputs (drawn from a generator seeded with ``seed``)."""
    net.eval()
    generator = torch.Generator(device).manual_seed(seed + 1)
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "bicubic_psnr": [], "bicubic_ssim": []}
    for start in range(0, len(data), batch_size):
        hr = data.images[start : start + batch_size].to(device).float() / 255
        n = hr.shape[0]
        lr_image = degrade(hr, config.scale, config.degradation_config(),
                           lambda *s: torch.rand(n, *s, generator=generator, device=device),
                           lambda *s: torch.randn(n, *s, generator=generator, device=device))
        for prefix, out in (("", net(lr_image).clamp(0, 1)), ("bicubic_", bicubic(lr_image, config.scale))):
            scores[f"{prefix}psnr"].append(psnr(hr, out))
            scores[f"{prefix}ssim"].append(ssim(hr, out))
    return {**{k: torch.cat(v).mean().item() for k, v in scores.items()}, "images": len(data)}


def _check_data(config: UpscalerConfig, data: ImageDataset) -> None:
    if data.image_size % config.scale:
        raise GenpixError(f"pictures of {data.image_size} px cannot be downscaled by {config.scale}; "
                          f"pass --image-size with a multiple of {config.scale}")


FAMILY = Family(
    "upscaler", "super-resolution upscaler (SRVGGNetCompact or RRDBNet, L1 on degraded/clean pairs)",
    UpscalerConfig, UpscalerTask, default_lr=5e-4,
    help={"scale": "upscaling factor",
          "architecture": "compact = Real-ESRGAN's SRVGGNetCompact, rrdb = ESRGAN's RRDBNet",
          "num_features": "channels of the hidden convolutions", "num_conv": "compact: hidden convolutions",
          "num_blocks": "rrdb: residual-in-residual dense blocks", "growth_channels": "rrdb: dense-block growth",
          "degradation": "bicubic downscale only, or blur + downscale + noise + JPEG",
          "blur_sigma_max": "real: largest blur sigma", "noise_max": "real: largest noise std (0..1)",
          "jpeg_quality_min": "real: lowest JPEG quality, 0 = no JPEG"},
    task_options=lambda options, train: {"export_every": train.checkpoint_every, "total_steps": train.steps},
    train_defaults={"batch_size": 32, "lr_schedule": "cosine"},
    check_data=_check_data)
