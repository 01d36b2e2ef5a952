"""Sampling loops as pure functions in the sigma form x = x0 + sigma eps (k-diffusion's contract),
and their registry under sd-webui's names.

Every sampler has the signature ``sample_x(denoiser, x, sigmas, *, generator=None, callback=None,
**options) -> Tensor``: ``denoiser(x, sigma, **cond) -> x0``; ``x`` (B, C, H, W) is the start at
``sigmas[0]``; ``sigmas`` descend, normally to 0; ``generator`` is a torch.Generator or a list of
one per image (so an image never depends on its batch); ``callback`` gets a dict (i, x, sigma,
sigma_next, denoised) after each step. Samplers keep nothing between calls. Look them up by
sd-webui name with :func:`get`, or resolve a name with its schedule with :func:`resolve`
("DPM++ 2M Karras" -> DPM++ 2M on the Karras schedule).

The loops live by family: :mod:`samplers_karras` (Euler, Euler a, Heun, DPM2, DPM2 a, LMS),
:mod:`samplers_dpmpp` (DPM-Solver++), :mod:`samplers_dpm_solver` (DPM fast, DPM adaptive),
:mod:`samplers_restart` (Restart), :mod:`samplers_timestep` (DDIM, DDPM, PLMS, UniPC, LCM);
their shared steps in :mod:`sampler_steps`.

Starting point: for a variance-preserving model, pure noise x_T ~ N(0, I) is
``x = noise * sqrt(sigmas[0]**2 + 1)`` in the sigma form (what diffusers' DDIM and DDPM loops
start from); k-diffusion's ``noise * sigmas[0]`` differs from it by a factor sqrt(alpha_bar_T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genpix.diffusion import schedules
from genpix.diffusion.sampler_steps import GeneratorArg, ancestral_step, randn_like
from genpix.diffusion.samplers_dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from genpix.diffusion.samplers_dpmpp import (sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s_ancestral,
                                            sample_dpmpp_3m_sde, sample_dpmpp_sde)
from genpix.diffusion.samplers_karras import (sample_dpm_2, sample_dpm_2_ancestral, sample_euler,
                                             sample_euler_ancestral, sample_heun, sample_lms)
from genpix.diffusion.samplers_restart import sample_restart
from genpix.diffusion.samplers_timestep import (sample_ddim, sample_ddpm, sample_lcm, sample_plms,
                                               sample_unipc)
from genpix.errors import GenpixError

Sampler = Callable[..., torch.Tensor]
MAX_STEPS = 1000

__all__ = ["MAX_STEPS", "SAMPLERS", "SAMPLER_INFO", "SamplerInfo", "ancestral_step", "check_steps", "get",
           "names", "randn_like", "resolve", "sample"]


@dataclass(frozen=True)
class SamplerInfo:
    """One registry entry: sd-webui's label, the function, its aliases (k-diffusion / sd-webui
    style), the schedule "Automatic" stands for, the keyword options it takes, and fixed ones."""

    name: str
    function: Sampler
    aliases: tuple[str, ...]
    default_schedule: str
    options: tuple[str, ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()
    # where sampling starts and ends, as sd-webui runs each sampler (sd_samplers_timesteps.py):
    # vp_start: from x_T = noise itself, noise * sqrt(sigma_max^2 + 1) in the sigma form, not
    # k-diffusion's noise * sigma_max; ends_at_first_alpha: the last step goes to alphas_cumprod[0]
    # rather than 1 for models whose schedule says so (diffusers' set_alpha_to_one=False)
    vp_start: bool = False
    ends_at_first_alpha: bool = False

    def __call__(self, denoiser, x, sigmas, **kwargs: Any) -> torch.Tensor:
        return self.function(denoiser, x, sigmas, **dict(self.fixed), **kwargs)


CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
ETA = ("eta", "s_noise")
ADAPTIVE = ("order", "rtol", "atol", "h_init", "pcoeff", "icoeff", "dcoeff", "accept_safety")
# sd-webui's list (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py, sd_samplers_lcm.py)
# with its default schedules; DDPM is genpix's addition (Ho et al. 2020).
_ENTRIES = (
    SamplerInfo("DPM++ 2M", sample_dpmpp_2m, ("k_dpmpp_2m",), "karras"),
    SamplerInfo("DPM++ SDE", sample_dpmpp_sde, ("k_dpmpp_sde",), "karras", (*ETA, "r")),
    SamplerInfo("DPM++ 2M SDE", sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde",), "exponential", ETA),
    SamplerInfo("DPM++ 2M SDE Heun", sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde_heun",), "exponential", ETA,
                (("solver_type", "heun"),)),
    SamplerInfo("DPM++ 2S a", sample_dpmpp_2s_ancestral, ("k_dpmpp_2s_a",), "karras", ETA),
    SamplerInfo("DPM++ 3M SDE", sample_dpmpp_3m_sde, ("k_dpmpp_3m_sde",), "exponential", ETA),
    SamplerInfo("Euler a", sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"), "uniform", ETA),
    SamplerInfo("Euler", sample_euler, ("k_euler",), "uniform", CHURN),
    SamplerInfo("LMS", sample_lms, ("k_lms",), "uniform", ("order",)),
    SamplerInfo("Heun", sample_heun, ("k_heun",), "uniform", CHURN),
    SamplerInfo("DPM2", sample_dpm_2, ("k_dpm_2",), "karras", CHURN),
    SamplerInfo("DPM2 a", sample_dpm_2_ancestral, ("k_dpm_2_a",), "karras", ETA),
    SamplerInfo("DPM fast", sample_dpm_fast, ("k_dpm_fast",), "uniform", ETA),
    SamplerInfo("DPM adaptive", sample_dpm_adaptive, ("k_dpm_ad",), "uniform", (*ETA, *ADAPTIVE)),
    SamplerInfo("Restart", sample_restart, ("restart",), "karras", ("s_noise",)),
    SamplerInfo("DDIM", sample_ddim, ("ddim",), "ddim", ("eta",), vp_start=True, ends_at_first_alpha=True),
    SamplerInfo("PLMS", sample_plms, ("plms",), "ddim", vp_start=True, ends_at_first_alpha=True),
    SamplerInfo("UniPC", sample_unipc, ("unipc",), "uniform", ("order", "variant", "lower_order_final"),
                vp_start=True),
    SamplerInfo("LCM", sample_lcm, ("k_lcm",), "uniform"),
    SamplerInfo("DDPM", sample_ddpm, ("ddpm",), "uniform", vp_start=True),
)
SAMPLER_INFO: dict[str, SamplerInfo] = {entry.name: entry for entry in _ENTRIES}
SAMPLERS: dict[str, Sampler] = {entry.name: entry for entry in _ENTRIES}  # name -> callable sampler
_BY_LOWER: dict[str, str] = {k.lower(): entry.name for entry in _ENTRIES for k in (entry.name, *entry.aliases)}


def names() -> list[str]:
    return list(SAMPLERS)


def _unknown(name: str) -> GenpixError:
    return GenpixError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)} "
                       f"(optionally followed by a schedule type, e.g. 'DPM++ 2M Karras')")


def resolve(name: str, schedule: str | None = None) -> tuple[SamplerInfo, str]:
    """(sampler, schedule key) from an sd-webui sampler name, label or alias (case-insensitive),
    possibly with a schedule label appended as in sd-webui before 1.9 ("DPM++ 2M Karras",
    "DPM++ 2M SDE Exponential"), and an optional schedule type; "Automatic" (or None) becomes the
    sampler's default schedule. Unknown names are errors listing the choices, never a substitute."""
    key = str(name).strip().lower()
    suffix = None
    if key not in _BY_LOWER:
        for label in sorted(schedules.schedule_labels(), key=len, reverse=True):
            stem = key[: -len(label)].rstrip() if key.endswith(" " + label.lower()) else None
            if stem and stem in _BY_LOWER:
                key, suffix = stem, schedules.schedule_key(label)
                break
        else:
            raise _unknown(name)
    entry = SAMPLER_INFO[_BY_LOWER[key]]
    chosen = "automatic" if schedule is None else schedules.schedule_key(schedule)
    if suffix is not None and chosen not in ("automatic", suffix):
        raise GenpixError(f"sampler {name!r} names the {suffix} schedule but schedule {schedule!r} was given")
    chosen = suffix or chosen
    return entry, entry.default_schedule if chosen == "automatic" else chosen


def get(name: str) -> SamplerInfo:
    """The sampler registered under sd-webui's ``name`` (or an alias, or a legacy name with a
    schedule suffix, whose schedule this drops: use :func:`resolve` to keep it)."""
    return resolve(name)[0]


def check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise GenpixError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")


def check_options(entry: SamplerInfo, options: dict[str, Any]) -> None:
    """An option the sampler does not take is an error naming the ones it does."""
    extra = sorted(set(options) - set(entry.options))
    if extra:
        takes = ", ".join(entry.options) or "no options"
        raise GenpixError(f"sampler {entry.name!r} takes no {', '.join(extra)}; it takes: {takes}")


def sample(denoiser, noise: torch.Tensor, steps: int, sampler: str = "DDIM", *, schedule: str | None = None,
           generator: GeneratorArg = None, callback: Callable[[dict[str, Any]], None] | None = None,
           **options: Any) -> torch.Tensor:
    """The whole loop for a variance-preserving model: sigmas = denoiser.sigmas(steps, schedule)
    (schedule None or "Automatic": the sampler's default), x = noise sqrt(sigmas[0]^2 + 1)
    (pure noise x_T), then the named sampler -> x0 (B, C, H, W)."""
    entry, schedule_key = resolve(sampler, schedule)
    check_steps(steps)
    check_options(entry, options)
    sigmas = denoiser.sigmas(steps, schedule_key)
    x = noise * (sigmas[0].item() ** 2 + 1) ** 0.5
    return entry(denoiser, x, sigmas, generator=generator, callback=callback, **options)
