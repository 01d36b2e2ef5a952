"""The ``model`` section of a pixel-space diffusion model: its U-Net, noise schedule,
parameterisation and training objective, and how to rebuild the denoiser from them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

from genpix.config import check
from genpix.diffusion import schedules
from genpix.diffusion.denoiser import ContinuousCosineDenoiser, Denoiser, DiscreteDenoiser, Network
from genpix.models.unet import PRESETS, Preset, UNetConfig, preset_config

Schedule = Literal["linear", "scaled_linear", "cosine", "signal_cosine"]
SCHEDULES: tuple[str, ...] = (*schedules.BETA_SCHEDULES, "signal_cosine")


@dataclass(frozen=True)
class DDPMConfig:
    image_size: int = 28  # H = W of the images
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    # the U-Net: a preset, and any of its fields overridden
    preset: Preset = "tiny"  # tiny / small / base (see genpix.models.unet.PRESETS)
    base_channels: int | None = None
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int | None = None
    attention_levels: tuple[int, ...] | None = None
    dropout: float = 0.0
    # the forward process
    schedule: Schedule = "linear"  # betas (discrete t) or the seed's continuous signal-rate cosine
    timesteps: int = 1000  # T of the discrete schedules; the time scale of the continuous one
    beta_start: float = 1e-4  # linear / scaled_linear (Ho et al. 2020: 1e-4 .. 0.02)
    beta_end: float = 0.02
    min_signal_rate: float = 0.02  # signal_cosine (seed 000, listing 17.7)
    max_signal_rate: float = 0.95
    # the objective
    prediction: Literal["eps", "v", "x0"] = "eps"  # what the network outputs
    loss: Literal["mse", "mae"] = "mse"  # Ho et al.'s L_simple, or the seed's MAE
    min_snr_gamma: float | None = None  # min-SNR-gamma loss weighting (Hang et al. 2023), e.g. 5
    cond: Literal["none", "class"] = "none"  # class-conditional with classifier-free guidance
    num_classes: int = 0  # classes of the dataset (set from the data)
    cond_drop_prob: float = 0.1  # label dropout to the null class (Ho and Salimans 2022)
    # optimisation details the trainer's TrainConfig does not cover
    ema_decay: float = 0.999  # EMA of the weights, used for sampling
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (the seed: 1e-4)
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"  # autocast dtype, on CUDA only

    def __post_init__(self) -> None:
        check(self.preset in PRESETS, f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        check(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        check(self.timesteps >= 2, f"timesteps must be at least 2, got {self.timesteps}")
        check(0 < self.beta_start < self.beta_end < 1,
              f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        check(0 < self.min_signal_rate < self.max_signal_rate < 1,
              f"need 0 < min_signal_rate < max_signal_rate < 1, got {self.min_signal_rate}, {self.max_signal_rate}")
        check(self.min_snr_gamma is None or self.min_snr_gamma > 0,
              f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        check(self.cond != "class" or self.num_classes >= 1,
              "--cond class needs a dataset with class labels (this one has none)")
        check(0 <= self.cond_drop_prob < 1, f"cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check(self.grad_clip >= 0 and self.weight_decay >= 0, "grad_clip and weight_decay must be >= 0")
        self.unet_config()  # validates the network's shape

    @property
    def continuous(self) -> bool:
        return self.schedule == "signal_cosine"

    @property
    def class_conditional(self) -> bool:
        return self.cond == "class"

    def unet_config(self) -> UNetConfig:
        overrides = {k: getattr(self, k) for k in ("base_channels", "channel_mult", "num_res_blocks",
                                                   "attention_levels") if getattr(self, k) is not None}
        return preset_config(self.preset, image_size=self.image_size, channels=self.channels,
                             dropout=self.dropout, **overrides,
                             num_classes=self.num_classes if self.class_conditional else 0)

    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t, float32 (T,), of a discrete schedule (a fresh copy)."""
        return alphas_cumprod_table(self.schedule, self.timesteps, self.beta_start, self.beta_end).clone()

    def denoiser(self, network: Network) -> Denoiser:
        """D(x, sigma, **cond) -> x0 for a network trained with this config."""
        if self.continuous:
            return ContinuousCosineDenoiser(network, self.prediction, min_signal_rate=self.min_signal_rate,
                                            max_signal_rate=self.max_signal_rate, time_scale=self.timesteps)
        return DiscreteDenoiser(network, self.alphas_cumprod(), self.prediction)

    def noise_levels(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training noise levels from uniform draws ``u`` in [0, 1), one per image (B,) (e.g.
        ``batch.rand()``): (network time t (B,), alpha (B,), sigma_vp (B,)), with
        x_t = alpha x0 + sigma_vp eps. Discrete: t = floor(u T) ~ U{0..T-1} (Ho et al. 2020,
        Algorithm 1); continuous: diffusion time u ~ U(0, 1) (seed 000's call())."""
        if self.continuous:
            noise, signal = schedules.signal_cosine(u, self.min_signal_rate, self.max_signal_rate)
            return u * self.timesteps, signal, noise
        return discrete_noise_levels(u, self.alphas_cumprod())


def discrete_noise_levels(u: torch.Tensor,
                          alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t (B,), alpha (B,), sigma_vp (B,)) at t = floor(u T) ~ U{0..T-1} for uniform draws ``u``
    (B,) in [0, 1) (Ho et al. 2020, Algorithm 1), alpha^2 = alpha_bar_t = 1 - sigma_vp^2."""
    timesteps = len(alphas_cumprod)
    t = (u * timesteps).long().clamp_max(timesteps - 1)
    alpha_bar = alphas_cumprod.to(u.device)[t]
    return t.float(), alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


@lru_cache(maxsize=8)
def alphas_cumprod_table(schedule: str, timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """alpha_bar_t (T,) of a beta schedule, cached (callers clone before changing it)."""
    return schedules.alphas_cumprod(schedules.betas(schedule, timesteps, beta_start, beta_end))
