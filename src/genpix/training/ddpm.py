"""Training task of pixel-space diffusion: Algorithm 1 of Ho et al. (2020) (or the seed's
continuous cosine schedule), with EMA weights, gradient clipping, CUDA autocast and label dropout
for classifier-free guidance."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from PIL import Image

from genpix.config import to_dict
from genpix.data import ImageDataset
from genpix.diffusion import samplers
from genpix.diffusion.config import DDPMConfig
from genpix.diffusion.denoiser import append_dims, training_target
from genpix.diffusion.losses import diffusion_loss, min_snr_weight
from genpix.io.images import make_grid, to_pil
from genpix.models.unet import UNet
from genpix.training.families import Family
from genpix.training.task import Batch


@dataclass(frozen=True)
class Noised:
    """One training draw of the forward process: x_t = alpha x0 + sigma_vp eps (B, C, H, W) at
    network time t (B,), what the network should output, and the per-image loss weight."""

    x_t: torch.Tensor
    t: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None

    def loss(self, output: torch.Tensor, kind: str) -> torch.Tensor:
        return diffusion_loss(output, self.target, kind, self.weight)


def forward_process(objective: Any, x0: torch.Tensor, batch: Batch) -> Noised:
    """Algorithm 1 of Ho et al. (2020) up to the network: t and eps per image from the batch
    (``batch.rand``, then ``batch.randn``: the same draws whatever the number of processes),
    x_t, the target (eps, v or x0) and min-SNR weights when asked. ``objective`` is a config with
    ``noise_levels(u)``, ``prediction`` and ``min_snr_gamma`` (DDPMConfig, LDMConfig)."""
    t, alpha, sigma_vp = objective.noise_levels(batch.rand())
    eps = batch.randn(*x0.shape[1:])
    a, s = append_dims(alpha, x0.ndim), append_dims(sigma_vp, x0.ndim)
    weight = (min_snr_weight(alpha**2 / sigma_vp**2, objective.min_snr_gamma, objective.prediction)
              if objective.min_snr_gamma else None)
    return Noised(a * x0 + s * eps, t, training_target(objective.prediction, x0, eps, a, s), weight)


def optimiser_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, module: torch.nn.Module,
                   grad_clip: float, scaler: torch.amp.GradScaler | None = None) -> dict[str, torch.Tensor]:
    """Backward (through ``scaler`` for fp16), clip the gradient norm of ``module`` at
    ``grad_clip`` (0 = off), step; returns the loss and the gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    metrics = {"loss": loss.detach()}
    if grad_clip > 0:
        metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return metrics


@torch.no_grad()
def update_ema(ema: torch.nn.Module, live: torch.nn.Module, max_decay: float,
               optimizer: torch.optim.Optimizer, first_param: torch.Tensor) -> None:
    """theta_ema <- d theta_ema + (1 - d) theta, d = min(decay, (1 + n) / (10 + n)) after n
    optimiser steps (the warm-up keeps early averages from remembering the random init)."""
    n = int(optimizer.state[first_param].get("step", 0))
    decay = min(max_decay, (1 + n) / (10 + n))
    torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), 1 - decay)
    for b_ema, b in zip(ema.buffers(), live.buffers()):
        b_ema.copy_(b)


class DDPMTask:
    family = "ddpm"

    def __init__(self, config: DDPMConfig, *, lr: float, device: torch.device, seed: int = 0,
                 preview: int = 16, preview_steps: int = 20) -> None:
        self.config, self.device = config, device
        self.unet = UNet(config.unet_config()).to(device)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=lr, weight_decay=config.weight_decay)
        self.first_param = next(self.unet.parameters())
        self.network = self.unet  # what train_step calls; under torchrun, through DDP (distribute)
        amp = device.type == "cuda" and config.mixed_precision != "no"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision) if amp else None
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.preview_noise = torch.randn(preview, config.channels, config.image_size, config.image_size,
                                         generator=torch.Generator().manual_seed(seed))
        self.preview_steps = preview_steps

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "ema": self.ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.optimizer}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def loss(self, network: Callable[..., torch.Tensor], batch: Batch) -> torch.Tensor:
        """Algorithm 1: x_t = alpha x0 + sigma_vp eps at a random t; error of the network's output
        against its target (eps, v or x0), per-sample weighted by min-SNR when asked."""
        cfg = self.config
        x0 = batch.images * 2 - 1  # the model works in [-1, 1]
        # t, eps and the label dropout per image from the batch: the same draws whatever the
        # number of processes
        noised = forward_process(cfg, x0, batch)
        labels = None
        if cfg.class_conditional:
            drop = batch.rand() < cfg.cond_drop_prob
            labels = torch.where(drop, torch.full_like(batch.labels, cfg.num_classes), batch.labels)
        with torch.autocast("cuda", dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            output = network(noised.x_t, noised.t, labels)
        return noised.loss(output, cfg.loss)

    def distribute(self, wrap) -> None:
        # the U-Net through DDP; the EMA copy stays plain: every rank updates it from the same
        # all-reduced weights, so it stays the same on all ranks
        self.network = wrap(self.unet)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.unet.train()
        loss = self.loss(self.network, batch)
        metrics = optimiser_step(loss, self.optimizer, self.unet, self.config.grad_clip, self.scaler)
        update_ema(self.ema, self.unet, self.config.ema_decay, self.optimizer, self.first_param)
        return metrics

    @torch.no_grad()
    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        """A grid of EMA samples from fixed noise (DDIM, ``preview_steps`` steps); for a class model
        image i shows class i mod num_classes, guided with scale 3."""
        self.ema.eval()
        cfg = self.config
        denoiser = cfg.denoiser(self.ema)
        n = self.preview_noise.shape[0]
        if cfg.class_conditional:
            from genpix.diffusion.denoiser import CFGDenoiser

            labels = torch.arange(n, device=self.device) % cfg.num_classes
            denoiser = CFGDenoiser(denoiser, {"class_labels": labels},
                                   {"class_labels": torch.full_like(labels, cfg.num_classes)}, 3.0)
        x0 = samplers.sample(denoiser, self.preview_noise.to(self.device), self.preview_steps, "DDIM",
                             generator=torch.Generator().manual_seed(0))
        columns = cfg.num_classes if cfg.class_conditional and cfg.num_classes <= n else None
        return {"samples": make_grid(to_pil((x0.float().cpu() + 1) / 2), columns=columns)}

    @torch.no_grad()
    def evaluate(self, data: ImageDataset, limit: int = 256) -> dict[str, float]:
        """Mean loss of the EMA network on up to ``limit`` held-out images, at fixed random t and eps."""
        self.ema.eval()
        state = torch.random.get_rng_state()
        torch.manual_seed(1234)
        try:
            images = data.images[:limit].to(self.device).float().div(255)
            labels = data.labels[:limit].to(self.device) if data.labels is not None else None
            losses = [self.loss(self.ema, Batch(images[i:i + 64], None if labels is None else labels[i:i + 64], None))
                      for i in range(0, len(images), 64)]
        finally:
            torch.random.set_rng_state(state)
        return {"test_loss": torch.stack(losses).mean().item(), "images": len(images)}


def _preset_help() -> str:
    from genpix.models.unet import PRESETS, count_parameters, preset_config

    sizes = ", ".join(f"{name} {count_parameters(preset_config(name, image_size=32)) / 1e6:.1f}M" for name in PRESETS)
    return f"U-Net size, parameters at 1 channel: {sizes}"


FAMILY = Family(
    "ddpm", "pixel-space diffusion U-Net (DDPM / DDIM, seeds 000-003)", DDPMConfig, DDPMTask, default_lr=1e-3,
    train_defaults={"warmup_steps": 100, "lr_schedule": "cosine"},
    help={"preset": _preset_help, "base_channels": "override the preset's first-level channels",
          "channel_mult": "override the channel multipliers, e.g. 1,2,2",
          "num_res_blocks": "override residual blocks per level",
          "attention_levels": "levels with self-attention, e.g. 2 (0 = full size; default: the preset's)",
          "dropout": "dropout in residual blocks",
          "schedule": "noise schedule (linear: Ho et al.'s betas; signal_cosine: the seed's continuous one)",
          "timesteps": "T of the discrete schedules", "beta_start": "first beta of linear / scaled_linear",
          "beta_end": "last beta of linear / scaled_linear", "min_signal_rate": "signal_cosine's lowest rate",
          "max_signal_rate": "signal_cosine's highest rate", "prediction": "what the network predicts",
          "loss": "mse (Ho et al.) or mae (the seed)", "min_snr_gamma": "min-SNR loss weighting, e.g. 5 (default off)",
          "cond": "class: class-conditional with label dropout for classifier-free guidance",
          "cond_drop_prob": "label dropout probability", "ema_decay": "EMA decay of the sampling weights",
          "grad_clip": "max gradient norm, 0 = off", "weight_decay": "AdamW weight decay",
          "mixed_precision": "autocast dtype on CUDA (the CPU always trains in float32)"})
