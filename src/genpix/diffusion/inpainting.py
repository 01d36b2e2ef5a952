"""Inpainting with an ordinary (unmasked) model as a denoiser wrapper: the latent mask.

At every step the part of x outside the mask is replaced by the original x0 noised to the current
sigma, x_known = x0 + sigma eps (q(x_t | x0), Ho et al. 2020 eq. 4, in the sigma form), so the
model always sees the original there and only the masked part is generated: the known-region
conditioning of RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion
Probabilistic Models", Algorithm 1 lines 5-7, without its resampling), which is also what
diffusers' inpaint pipeline does for 4-channel U-Nets and sd-webui's latent mask for ordinary models.
The x0 estimate is blended the same way (x0 itself outside the mask), so a deterministic sampler
walks the known region exactly along x0 + sigma eps and every sampler ends there on x0 at sigma 0.

Samplers stay pure: they see one more denoiser D(x, sigma, **cond) -> x0, keeping nothing between calls.
"""

from __future__ import annotations

from typing import Any

import torch

from genpix.diffusion.denoiser import append_dims


def blend(generated: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mask * generated + (1 - mask) * known; ``mask`` (B or 1, 1, H, W) in [0, 1], 1 = generate
    (written so that mask 0 and 1 give ``known`` and ``generated`` exactly)."""
    return mask * generated + (1 - mask) * known


class MaskedDenoiser:
    """D_masked(x, sigma) = blend(D(blend(x, x0 + sigma eps, m), sigma), x0, m).

    ``x0`` (B, C, H, W) is the original in the model's space (pixels in [-1, 1] or scaled VAE
    latents), ``mask`` (B or 1, 1, H, W) its mask on the same grid (1 = repaint), ``noise``
    (B, C, H, W) the unit-variance noise that noised the start (diffusers' add_noise with the
    same noise at every step)."""

    def __init__(self, denoiser, x0: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> None:
        if x0.shape != noise.shape or mask.shape[-2:] != x0.shape[-2:]:
            raise ValueError(f"x0 {tuple(x0.shape)}, mask {tuple(mask.shape)} and noise {tuple(noise.shape)} "
                             f"must share the batch and the grid")
        self.denoiser, self.x0, self.mask, self.noise = denoiser, x0, mask.to(x0.dtype), noise

    def known(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The original at noise level sigma (a number, () or (B,)): x0 + sigma eps."""
        sigma = torch.as_tensor(sigma, dtype=self.x0.dtype, device=self.x0.device)
        return self.x0 + append_dims(sigma.expand(self.x0.shape[0]), self.x0.ndim) * self.noise

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        denoised = self.denoiser(blend(x, self.known(sigma), self.mask), sigma, **extra)
        return blend(denoised, self.x0, self.mask)

    def finish(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """A sampler's result at its last sigma with the known region put back exactly (sd-webui's
        ``samples * nmask + init_latent * mask`` after sampling)."""
        return blend(x, self.known(sigma), self.mask)
