"""One typed generation request, shared by the CLI, the Python API and the HTTP server.

Every surface builds a :class:`GenerationRequest` (``GenerationRequest.of(**fields)`` names an
unknown field in a one-line error) and hands it to a pipeline, which binds it against what the
loaded model can do (pipelines/capabilities.py). ``None`` means "the model's default" for every
field that has one (steps, sampler, CFG scale, size, strength).

Images are tensors: ``init_images`` (1 or n, C, H, W) and ``mask`` (1 or n, 1, H, W), both in
[0, 1], the mask 1 (white) where to repaint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from difflib import get_close_matches
from typing import Any

import torch

from genpix.errors import GenpixError


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. ``n`` images, image i from seed ``seed + i`` (sd-webui's batch)."""

    prompt: str = ""
    negative_prompt: str = ""
    class_name: str | int | None = None  # a class-conditional model's class ("" or None: unconditional)
    n: int = 1
    seed: int = 0
    subseed: int = 0  # sd-webui's variation seed (diffusion/noise.py)
    seeds: tuple[int, ...] | None = None  # n per-image seeds in place of seed + i (several requests in one batch)
    subseeds: tuple[int, ...] | None = None  # n per-image variation seeds in place of subseed + i
    subseed_strength: float = 0.0  # 0: the seed's noise, 1: the subseed's
    seed_resize_from_h: int = 0  # > 0 with _w: the seed's noise as drawn at that size (its composition)
    seed_resize_from_w: int = 0
    eta_noise_seed_delta: int = 0  # ENSD: the samplers' later noise from seed + delta
    steps: int | None = None
    sampler: str | None = None  # sd-webui names, legacy "DPM++ 2M Karras" too
    schedule: str | None = None  # schedule type; None or "Automatic": the sampler's own
    cfg_scale: float | None = None
    eta: float | None = None
    s_churn: float | None = None
    # sd-webui's sd_noise_schedule: "Zero Terminal SNR" ("ztsnr") samples on the model's schedule rescaled to
    # zero terminal SNR (pipelines/parts.py with_noise_schedule); "Default": the model's own
    noise_schedule: str = "default"
    s_noise: float | None = None
    width: int | None = None
    height: int | None = None
    clip_skip: int = 1  # sd-webui's "Clip skip" (1: the text encoder's last layer)
    latents: torch.Tensor | None = None  # (n, C, h, w) unit-variance starting noise
    prompt_embeds: torch.Tensor | None = None  # (1, L, D) in place of the encoded prompt
    init_images: torch.Tensor | None = None  # img2img / inpaint
    init_latents: torch.Tensor | None = None  # img2img from the model's own space (n, C, h, w), e.g. hires fix
    strength: float | None = None  # denoising strength (img2img)
    mask: torch.Tensor | None = None  # inpaint: 1 = repaint
    mask_blur: int = 0
    inpainting_fill: int = 1  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    invert_mask: bool = False
    callback: Callable[[dict[str, Any]], None] | None = None  # after each sampling step
    # SDXL's micro-conditioning (Podell et al. 2023 sec. 2.2; None: sd-webui's, pipelines/sdxl_conditioning.py)
    original_size: tuple[int, int] | None = None  # (height, width); None: the image's
    crop_top_left: tuple[int, int] | None = None  # (top, left); None: (0, 0)
    target_size: tuple[int, int] | None = None  # (height, width); None: the image's
    aesthetic_score: float | None = None  # the refiner's, for the prompt (None: 6.0) ...
    negative_aesthetic_score: float | None = None  # ... and for the negative prompt (None: 2.5)
    refiner: Any = None  # a loaded pipeline that takes over the last steps (pipelines/refiner.py), e.g. SDXL's
    refiner_switch_at: float = 0.8  # the base denoises the steps i with i / steps <= this
    # hires fix (sd-webui's two-pass txt2img, pipelines/hires.py); ``strength`` is its denoising strength
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0  # > 0: the second pass's width instead of width * hr_scale (one side 0: keep the aspect)
    hr_resize_y: int = 0
    hr_upscaler: str | None = None  # a latent mode ("Latent", the default) or an upscaler name (pipelines/upscalers.py)
    hr_second_pass_steps: int = 0  # 0: as many as the first pass
    hr_sampler: str | None = None  # None: the first pass's
    hr_schedule: str | None = None
    hr_prompt: str = ""  # "": the first pass's
    hr_negative_prompt: str = ""
    # less work per picture (pipelines/fast.py); each off by default
    deepcache_interval: int = 0  # DeepCache: a full U-Net pass every N calls, the shallow branch between (0: off)
    deepcache_block: int = 0  # its skip branch leaves the finest level after down layer K (1: the paper's); 0: all
    token_merging_ratio: float = 0.0  # ToMe for SD: the fraction of tokens merged before self-attention (sd-webui's)
    tiny_decode: bool = False  # decode the final pictures with the model's tiny (TAESD) decoder

    @classmethod
    def of(cls, **values: Any) -> GenerationRequest:
        """A request from keyword arguments; an unknown one is a one-line error naming it (and the
        closest field names)."""
        names = [f.name for f in fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = {k: get_close_matches(k, names, n=1) for k in unknown}
            said = ", ".join(k + (f" (did you mean {h[0]}?)" if h else "") for k, h in hints.items())
            raise GenpixError(f"unknown generation option{'s' if len(unknown) > 1 else ''}: {said}")
        return cls(**values)

    def given(self) -> dict[str, Any]:
        """The fields that differ from their defaults (what the caller asked for)."""
        default = GenerationRequest()
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) or value != getattr(default, f.name):
                out[f.name] = value
        return out

    def but(self, **changes: Any) -> GenerationRequest:
        """A copy with ``changes`` (named fields only)."""
        return replace(self, **changes)

    @property
    def init(self) -> torch.Tensor | None:
        """What img2img starts from: the init images, or latents."""
        return self.init_images if self.init_images is not None else self.init_latents
