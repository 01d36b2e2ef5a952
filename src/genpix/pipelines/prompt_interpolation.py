"""A walk between two prompts: slerp between their text embeddings and between two starting noises,
one picture per point (seed 000, listing 17.10: interpolating text embeddings and initial noise)."""

from __future__ import annotations

from typing import Any

import torch

from genpix.errors import GenpixError
from genpix.pipelines.latent_decoder import slerp
from genpix.pipelines.output import PipelineOutput


def interpolate_prompts(pipe, prompt_a: str, prompt_b: str, frames: int, *, seed_a: int = 0,
                        seed_b: int | None = None, width: int | None = None, height: int | None = None,
                        **options: Any) -> PipelineOutput:
    """``frames`` pictures from ``prompt_a`` to ``prompt_b`` with a text-to-image pipeline (one with
    ``encode_prompt``). Point t of the walk is denoised from slerp(t, noise_a, noise_b) with the
    context slerp(t, tau(prompt_a), tau(prompt_b)); noise_a and noise_b are N(0, I) latents seeded
    ``seed_a`` and ``seed_b`` (default: the same seed, so only the prompt moves). ``options`` go to
    the pipeline (steps, sampler, cfg_scale, negative_prompt, ...)."""
    if frames < 2:
        raise GenpixError(f"frames must be at least 2, got {frames}")
    caps = getattr(pipe, "capabilities", None)
    if caps is None or caps.conditioning != "text":
        raise GenpixError(f"{pipe.model_name} ({pipe.family}) is not text-conditioned; it has no prompts to walk between")
    width, height = width or caps.native_size[0], height or caps.native_size[1]
    space = pipe.parts.space
    shape = (space.latent_channels, height // space.factor, width // space.factor)
    noise_a, noise_b = (torch.randn(shape, generator=torch.Generator().manual_seed(s))
                        for s in (seed_a, seed_a if seed_b is None else seed_b))
    with torch.no_grad():
        context_a, context_b = pipe.encode_prompt(prompt_a), pipe.encode_prompt(prompt_b)
    if context_a.shape != context_b.shape:
        raise GenpixError("the two prompts encode to different lengths (75-token chunks); shorten the longer one")
    outs = []
    for t in torch.linspace(0, 1, frames).tolist():
        outs.append(pipe(prompt=f"{prompt_a} -> {prompt_b} at {t:.2f}", prompt_embeds=slerp(t, context_a, context_b),
                         latents=slerp(t, noise_a, noise_b)[None], seed=seed_a, width=width, height=height,
                         **options))
    return PipelineOutput([im for o in outs for im in o.images], torch.cat([o.tensors for o in outs]),
                          [text for o in outs for text in o.infotexts],
                          {"prompt_a": prompt_a, "prompt_b": prompt_b, "frames": frames, "seeds": [seed_a, seed_b]})
