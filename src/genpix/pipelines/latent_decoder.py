"""Generation by decoding z ~ N(0, I): the VAE decoder (and, later, a GAN generator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genpix.errors import GenpixError
from genpix.io.images import format_infotext, to_pil
from genpix.pipelines.output import PipelineOutput


def seeded_normal(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """One N(0, I) tensor of ``shape`` per seed, each from its own CPU generator.

    Image i depends only on seeds[i], never on the batch size or the device.
    """
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985), as the seed's listing 17.10; lerp when parallel."""
    a, b = v0.flatten().double(), v1.flatten().double()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(eps)
    theta = torch.arccos(cos.clamp(-1, 1))
    if theta.abs() < 1e-4:
        return torch.lerp(v0, v1, t)
    s = torch.sin(theta)
    out = (torch.sin((1 - t) * theta) / s) * a + (torch.sin(t * theta) / s) * b
    return out.view_as(v0).to(v0.dtype)


class LatentDecoderPipeline:
    """z (B, latent_dim) ~ N(0, I) per seed -> decode(z) -> images (B, C, H, W) in [0, 1]."""

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], latent_dim: int, *,
                 model_name: str, family: str, device: torch.device | str = "cpu") -> None:
        self.decode, self.latent_dim = decode, latent_dim
        self.model_name, self.family, self.device = model_name, family, torch.device(device)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, C, H, W) in [0, 1] on the CPU, in chunks of 256."""
        parts = [self.decode(chunk.to(self.device)).float().cpu() for chunk in z.split(256)]
        return torch.cat(parts)

    def __call__(self, n: int = 1, seed: int = 0, latents: torch.Tensor | None = None,
                 **unsupported: Any) -> PipelineOutput:
        given = {k: v for k, v in unsupported.items() if v not in (None, "", 0)}
        if given:
            raise GenpixError(f"a {self.family} model takes no {', '.join(sorted(given))} "
                              f"(it generates from noise only)")
        if n < 1:
            raise GenpixError(f"number of images must be at least 1, got {n}")
        seeds = [seed + i for i in range(n)]
        z = seeded_normal((self.latent_dim,), seeds) if latents is None else latents
        images = self.decode_latents(z)
        size = f"{images.shape[-1]}x{images.shape[-2]}"
        infotexts = [format_infotext({"Seed": s, "Size": size, "Model": self.model_name,
                                      "Family": self.family}) for s in seeds]
        return PipelineOutput(to_pil(images), images, infotexts,
                              {"seeds": seeds, "model": self.model_name, "family": self.family})
