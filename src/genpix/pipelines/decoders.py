"""Decoders: the pipeline part between the space the denoiser works in and pictures in [0, 1].

- :class:`PixelSpace`: pixel diffusion works on images in [-1, 1] (the identity, rescaled); its x0
  estimates are clipped to that range while sampling (Ho et al. 2020; diffusers' clip_sample).
- :class:`AutoencoderSpace`: latent diffusion (Rombach et al. 2022) works on z * scaling_factor of a
  KL autoencoder; encoding draws z from the posterior q(z|x) with each image's generator.

A tiny preview decoder (TAESD) is a third kind with the same two methods.
"""

from __future__ import annotations

import torch

from genpix.models.autoencoder import AutoencoderKL


class PixelSpace:
    """Images (B, C, H, W): [0, 1] outside, [-1, 1] for the network."""

    factor = 1
    clip_x0 = True

    def __init__(self, channels: int) -> None:
        self.channels = self.latent_channels = channels

    def encode(self, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        return images.float() * 2 - 1  # no random draws

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() + 1) / 2).clamp(0, 1).cpu()


class AutoencoderSpace:
    """Latents z * scaling_factor (B, c, H/f, W/f) of a KL autoencoder, kept in float32 (SD's decoder
    overflows in float16, hence sd-webui's --no-half-vae)."""

    clip_x0 = False

    def __init__(self, vae: AutoencoderKL, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.vae = vae.eval().requires_grad_(False).to(self.device)
        self.factor = vae.config.downsampling_factor
        self.channels = vae.config.out_channels
        self.latent_channels = vae.config.latent_channels

    def encode(self, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> z * scaling_factor, z = mean + std eps, eps from
        generator i for image i (diffusers' order: the posterior sample before the noise)."""
        posterior = self.vae.encode(images.to(self.device).float() * 2 - 1)
        eps = torch.stack([torch.randn(posterior.mean.shape[1:], generator=g) for g in generators])
        return (posterior.mean + posterior.std * eps.to(self.device)) * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """z * scaling_factor (B, c, h, w) -> images (B, C, h f, w f) in [0, 1] on the CPU."""
        x = self.vae.decode(latents.to(self.device).float() / self.vae.config.scaling_factor)
        return ((x.float() + 1) / 2).clamp(0, 1).cpu()
