"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, sec. 3 and appendix G).

An image x (B, 3, H, W) in [-1, 1] is encoded into a diagonal Gaussian posterior q(z|x) over latents
z (B, latent_channels, H / f, W / f) with f = 2 ** (levels - 1) (8 for Stable Diffusion's four
levels); a light KL penalty towards N(0, I) keeps the latent space smooth. The encoder is residual
blocks per level with a strided convolution between levels, a middle of resnet, single-head
self-attention, resnet, and a 3x3 convolution to the posterior's mean and log-variance; the decoder
mirrors it with nearest upsampling. The diffusion model sees ``z * scaling_factor`` (0.18215 for
SD 1.x/2.x, the inverse of the latents' standard deviation measured on data, sec. 4.3.2).

Parameter names are those of diffusers' ``AutoencoderKL`` (``encoder.down_blocks.0.resnets.0``,
``encoder.mid_block.attentions.0.to_q``, ``quant_conv``, ...), so its state_dict loads unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import check, from_dict
from genpix.models.ldm_blocks import Attention, DownBlock2D, UNetMidBlock2D, UpBlock2D, map_diffusers_config

EPS = 1e-6  # every GroupNorm of the autoencoder


@dataclass(frozen=True)
class AutoencoderConfig:
    in_channels: int = 3  # image channels in
    out_channels: int = 3  # image channels out
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # channels per level (SD: 128 * (1, 2, 4, 4))
    layers_per_block: int = 2  # resnets per encoder level (the decoder has one more)
    latent_channels: int = 4  # channels of z
    norm_num_groups: int = 32  # GroupNorm groups; divides every level's channels
    scaling_factor: float = 0.18215  # z fed to the diffusion model = scaling_factor * z
    sample_size: int = 512  # the image size it was trained at (informational)

    def __post_init__(self) -> None:
        check(self.in_channels >= 1 and self.out_channels >= 1, "in_channels and out_channels must be >= 1")
        check(len(self.block_out_channels) >= 1 and all(c >= 1 for c in self.block_out_channels),
              f"block_out_channels must be positive integers, got {self.block_out_channels}")
        check(self.layers_per_block >= 1, f"layers_per_block must be at least 1, got {self.layers_per_block}")
        check(self.latent_channels >= 1, f"latent_channels must be at least 1, got {self.latent_channels}")
        check(self.norm_num_groups >= 1 and all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
              f"norm_num_groups {self.norm_num_groups} must divide every level's channels {self.block_out_channels}")
        check(math.isfinite(self.scaling_factor) and self.scaling_factor > 0,
              f"scaling_factor must be a positive number, got {self.scaling_factor}")

    @property
    def downsampling_factor(self) -> int:
        """f: latents are (H / f, W / f)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, config: dict[str, Any]) -> AutoencoderConfig:
        """Map a diffusers ``AutoencoderKL`` config.json; options this layout lacks are errors."""
        mapped = map_diffusers_config(config, cls, DIFFUSERS_FIXED, "AutoencoderKL")
        return from_dict(cls, mapped, where="AutoencoderKL")


def _all(name: str):
    return lambda types: all(t == name for t in types)


# diffusers AutoencoderKL options that genpix does not vary: key -> the accepted value (or a test)
DIFFUSERS_FIXED: dict[str, Any] = {
    "down_block_types": _all("DownEncoderBlock2D"), "up_block_types": _all("UpDecoderBlock2D"),
    "act_fn": "silu", "shift_factor": None, "latents_mean": None, "latents_std": None,
    "force_upcast": lambda value: isinstance(value, bool),  # a pipeline hint (run the VAE in float32)
    "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
}


class DiagonalGaussianDistribution:
    """q(z|x) = N(mean, exp(logvar)) from the encoder's (B, 2 * latent_channels, h, w) moments.

    logvar is clamped to [-30, 20] as in the LDM code."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)  # each (B, latent_channels, h, w)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I) drawn from ``generator`` (reparameterisation trick)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) summed over latent dimensions: (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])


def _mid_block(config: AutoencoderConfig) -> UNetMidBlock2D:
    channels = config.block_out_channels[-1]
    self_attention = partial(Attention, heads=1, dim_head=channels, bias=True, norm_groups=config.norm_num_groups,
                             eps=EPS, residual=True)
    return UNetMidBlock2D(channels, None, config.norm_num_groups, EPS, self_attention)


class Encoder(nn.Module):
    """x (B, in_channels, H, W) -> moments (B, 2 * latent_channels, H / f, W / f)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        widths, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownBlock2D(widths[max(i - 1, 0)], width, None, config.layers_per_block, groups, EPS,
                        add_downsample=i < len(widths) - 1, downsample_padding=0)
            for i, width in enumerate(widths))
        self.mid_block = _mid_block(config)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """z (B, latent_channels, h, w) -> x (B, out_channels, h * f, w * f)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        widths, groups = config.block_out_channels[::-1], config.norm_num_groups
        layers = config.layers_per_block + 1
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.mid_block = _mid_block(config)
        self.up_blocks = nn.ModuleList(
            UpBlock2D([widths[max(i - 1, 0)]] + [width] * (layers - 1), width, None, groups, EPS,
                      add_upsample=i < len(widths) - 1)
            for i, width in enumerate(widths))
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = nn.Conv2d(widths[-1], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class AutoencoderKL(nn.Module):
    """encode: x (B, C, H, W) in [-1, 1] -> q(z|x); decode: z (B, latent_channels, H / f, W / f) -> x.

    ``encode`` and ``decode`` work on unscaled latents; multiply by ``config.scaling_factor`` before
    diffusion and divide after, as Stable Diffusion pipelines do."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        f = self.config.downsampling_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of {f} on both sides")
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample_posterior: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        """Reconstruction (B, C, H, W) and the posterior (for the KL term)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior
