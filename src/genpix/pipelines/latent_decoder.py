"""Generation by decoding z ~ N(0, I): the VAE decoder or a GAN generator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genpix.errors import GenpixError
from genpix.io.images import format_infotext, to_pil
from genpix.pipelines.capabilities import Capabilities, bind, class_index
from genpix.pipelines.modes import image_seeds
from genpix.pipelines.output import PipelineOutput
from genpix.pipelines.request import GenerationRequest


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
    """z (B, latent_dim) ~ N(0, I) per seed -> decode(z) -> images (B, C, H, W) in [0, 1].

    ``value_range`` is the range of decode's output, mapped to [0, 1] (a GAN generator's tanh
    gives [-1, 1]). A class-conditional model has ``class_names`` and is called as
    ``decode(z, labels)``. ``encode`` (images in [0, 1] -> z), where the model has an encoder.
    """

    def __init__(self, decode: Callable[..., torch.Tensor], latent_dim: int, *,
                 model_name: str, family: str, image_shape: tuple[int, int, int], device: torch.device | str = "cpu",
                 value_range: tuple[float, float] = (0.0, 1.0),
                 class_names: tuple[str, ...] | None = None,
                 encode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.decode, self.latent_dim, self.encode = decode, latent_dim, encode
        self.model_name, self.family, self.device = model_name, family, torch.device(device)
        self.value_range, self.class_names, self.image_shape = value_range, class_names, image_shape
        channels, height, width = image_shape
        self.capabilities = Capabilities(family, model_name, "class" if class_names else "none", (width, height),
                                         channels=channels, class_names=tuple(class_names or ()))

    def class_index(self, name: str) -> int:
        """The label of a class name (case-insensitive); a one-line error lists the classes."""
        if self.class_names is None:
            raise GenpixError(f"this {self.family} model is not class-conditional; --class needs a "
                              f"model trained with --cond class")
        return class_index(self.capabilities, name)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) [+ labels (B,)] -> (B, C, H, W) in [0, 1] on the CPU, in chunks of 256."""
        if (self.class_names is not None) != (labels is not None):
            raise GenpixError(f"this {self.family} model needs class labels" if labels is None
                              else f"this {self.family} model is not class-conditional")
        lo, hi = self.value_range
        parts = []
        for start in range(0, len(z), 256):
            cond = () if labels is None else (labels[start : start + 256].to(self.device),)
            x = self.decode(z[start : start + 256].to(self.device), *cond).float().cpu()
            parts.append((x - lo) / (hi - lo))
        return torch.cat(parts)

    def __call__(self, prompt: str = "", negative_prompt: str = "", steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, seed: int = 0,
                 width: int | None = None, height: int | None = None, latents: torch.Tensor | None = None,
                 **fields: Any) -> PipelineOutput:
        """The one call of every pipeline (pipelines/request.py); a VAE or GAN takes n, seed,
        latents and, when class-conditional, class_name."""
        return self.generate(GenerationRequest.of(prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                                                  sampler=sampler, cfg_scale=cfg_scale, seed=seed, width=width,
                                                  height=height, latents=latents, **fields))

    def generate(self, request: GenerationRequest, *, lenient: bool = False) -> PipelineOutput:
        """Image i from seed + i; a class-conditional model draws ``class_name`` (default: class
        (seed + i) mod K, so each image still depends on its seed only)."""
        plan = bind(request, self.capabilities, lenient=lenient)
        request = plan.request
        seeds = image_seeds(request)[0]  # seed + i, or the request's per-image seeds
        z = seeded_normal((self.latent_dim,), seeds) if request.latents is None else request.latents
        labels = None
        if plan.label is not None:
            labels = torch.full((len(z),), plan.label, dtype=torch.long)
        elif self.class_names is not None:
            labels = torch.tensor(seeds[: len(z)]).remainder(len(self.class_names))
        images = self.decode_latents(z, labels)
        size = f"{images.shape[-1]}x{images.shape[-2]}"
        classes = [None] * len(seeds) if labels is None else [self.class_names[i] for i in labels.tolist()]
        infotexts = [format_infotext({"Seed": s, "Size": size, "Model": self.model_name,
                                      "Family": self.family, "Class": c}) for s, c in zip(seeds, classes)]
        return PipelineOutput(to_pil(images), images, infotexts,
                              {"seeds": seeds, "model": self.model_name, "family": self.family,
                               "class_name": request.class_name, "width": request.width, "height": request.height,
                               "ignored": list(plan.ignored)})
