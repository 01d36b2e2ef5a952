"""A refiner taking over the last part of the sampling, as sd-webui runs SDXL's refiner
(modules/sd_samplers_common.py ``apply_refiner``): the base model denoises the steps i with
i / steps <= refiner_switch_at, the refiner the rest, inside one sampler run (a multistep sampler
keeps its history across the switch). Both models work in the same latent space (an SDXL base and
its refiner share the autoencoder); each guides with its own conditions of the same prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from genpix.errors import GenpixError
from genpix.pipelines.capabilities import Plan, bind
from genpix.pipelines.parts import Parts


@dataclass(frozen=True)
class RefinerStage:
    parts: Parts  # the refiner's
    plan: Plan  # the request bound to the refiner
    conds: tuple[dict, dict]  # its condition and guidance branch, (1, ...) each
    sigma: float  # from this sigma down, the refiner denoises


class SwitchingDenoiser:
    """D(x, sigma): the base model's above ``sigma_switch``, the refiner's at and below it."""

    def __init__(self, base, refiner, sigma_switch: float) -> None:
        self.base, self.refiner, self.sigma_switch = base, refiner, sigma_switch

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        level = float(torch.as_tensor(sigma).flatten()[0])
        return (self.refiner if level <= self.sigma_switch * (1 + 1e-6) else self.base)(x, sigma, **extra)


def switch_step(steps: int, switch_at: float) -> int:
    """The first step the refiner takes: the smallest i with i / steps > switch_at (sd-webui's test)."""
    return min(steps, math.floor(switch_at * steps) + 1)


def refiner_stage(pipe, plan: Plan, sigmas: torch.Tensor) -> RefinerStage | None:
    """The refiner's part of ``plan`` (None without a refiner): its plan, conditions and switch sigma."""
    request = plan.request
    refiner = request.refiner
    if refiner is None:
        return None
    space, other = pipe.parts.space, getattr(getattr(refiner, "parts", None), "space", None)
    if other is None or (other.latent_channels, other.factor) != (space.latent_channels, space.factor):
        raise GenpixError(f"the refiner {getattr(refiner, 'model_name', refiner)!r} does not work in "
                          f"{pipe.model_name}'s latent space; an SDXL refiner goes with an SDXL base")
    if request.mask is not None:
        raise GenpixError("a refiner does not inpaint here; leave out the mask or the refiner")
    rplan = bind(request.but(refiner=None, init_images=None, init_latents=None, strength=None, enable_hr=False),
                 refiner.capabilities)
    conds = refiner._conditions(rplan)[:2]
    steps = len(sigmas) - 1
    return RefinerStage(refiner.parts, rplan, conds, float(sigmas[switch_step(steps, request.refiner_switch_at)]))
