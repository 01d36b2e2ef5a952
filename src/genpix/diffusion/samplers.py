"""Sampling loops as pure functions in the sigma form x = x0 + sigma eps (k-diffusion's contract).

Every sampler has the signature ``sample_x(denoiser, x, sigmas, *, generator=None, callback=None,
**options) -> Tensor``: ``denoiser(x, sigma, **cond) -> x0``; ``x`` (B, C, H, W) is the start at
``sigmas[0]``; ``sigmas`` descend to 0; ``generator`` is a torch.Generator or a list of one per
image (so an image never depends on its batch); ``callback`` gets a dict (i, x, sigma, sigma_next,
denoised) after each step. Samplers keep nothing between calls. Look them up by sd-webui name
with :func:`get`.

Starting point: for a variance-preserving model, pure noise x_T ~ N(0, I) is
``x = noise * sqrt(sigmas[0]**2 + 1)`` in the sigma form (what diffusers' DDIM and DDPM loops
start from); k-diffusion's ``noise * sigmas[0]`` differs from it by a factor sqrt(alpha_bar_T).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from genpix.errors import GenpixError

Sampler = Callable[..., torch.Tensor]
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def randn_like(x: torch.Tensor, generator: GeneratorArg = None) -> torch.Tensor:
    """N(0, I) shaped like x, drawn on each generator's device; with a list, row i from generator i."""
    if generator is None:
        return torch.randn_like(x)
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    if len(generator) != x.shape[0]:
        raise GenpixError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype)
                        for g in generator]).to(x.device)


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): a step from sigma to sigma_next split into a deterministic move to
    sigma_down and fresh noise of std sigma_up, sigma_down^2 + sigma_up^2 = sigma_next^2.

    sigma_up = eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2) is DDIM's sigma_t(eta)
    (Song et al. 2020, eq. 16) divided by sqrt(alpha_bar_prev); eta = 1 gives the DDPM posterior
    variance beta~_t (Ho et al. 2020, eq. 7), eta = 0 the deterministic DDIM.
    """
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


def _check(x: torch.Tensor, sigmas: torch.Tensor) -> None:
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise GenpixError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    if x.ndim != 4:
        raise GenpixError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")


def _ancestral_loop(denoiser, x, sigmas, generator, callback, eta: float) -> torch.Tensor:
    """x <- x0 + sigma_down eps_hat + sigma_up z per step, eps_hat = (x - x0) / sigma."""
    _check(x, sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i].item(), sigmas[i + 1].item()
        denoised = denoiser(x, sigmas[i].to(x.device))
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = denoised + (x - denoised) * (sigma_down / sigma)
        if sigma_up > 0:
            x = x + randn_like(x, generator) * sigma_up
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
    return x


@torch.no_grad()
def sample_ddim(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                callback: Callable[[dict[str, Any]], None] | None = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2020, eq. 12) over the strided sigmas; eta = 0 is deterministic.

    In the sigma form eq. 12 reads x_next = x0_hat + sigma_down eps_hat + sigma_up z (see
    :func:`ancestral_step`); with eta = 0 it is Euler's method on the probability-flow ODE.
    """
    if not 0 <= eta <= 1:
        raise GenpixError(f"eta must be between 0 and 1, got {eta}")
    return _ancestral_loop(denoiser, x, sigmas, generator, callback, eta)


@torch.no_grad()
def sample_ddpm(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                callback: Callable[[dict[str, Any]], None] | None = None) -> torch.Tensor:
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020): x_{t-1} = mu~(x_t, x0_hat) + sigma_t z
    with the posterior variance sigma_t^2 = beta~_t (eq. 7; diffusers' "fixed_small"), over any
    subsequence of timesteps (beta_t = 1 - alpha_bar_t / alpha_bar_prev); no noise on the last step.
    This is DDIM with eta = 1 (Song et al. 2020, sec. 4.1)."""
    return _ancestral_loop(denoiser, x, sigmas, generator, callback, 1.0)


@torch.no_grad()
def sample_euler_ancestral(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           generator: GeneratorArg = None,
                           callback: Callable[[dict[str, Any]], None] | None = None,
                           eta: float = 1.0) -> torch.Tensor:
    """Euler ancestral (k-diffusion's sample_euler_ancestral, sd-webui "Euler a"): an Euler step
    down to sigma_down, then noise of std sigma_up; the same update as DDIM with this eta."""
    return _ancestral_loop(denoiser, x, sigmas, generator, callback, eta)


@torch.no_grad()
def sample_euler(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                 callback: Callable[[dict[str, Any]], None] | None = None) -> torch.Tensor:
    """Euler's method on dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, Algorithm 2
    without churn)."""
    _check(x, sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i].to(x.device))
        d = (x - denoised) / sigmas[i].item()
        x = x + d * (sigmas[i + 1] - sigmas[i]).item()
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i].item(), "sigma_next": sigmas[i + 1].item(),
                      "denoised": denoised})
    return x


SAMPLERS: dict[str, Sampler] = {
    "Euler": sample_euler,
    "Euler a": sample_euler_ancestral,
    "DDIM": sample_ddim,
    "DDPM": sample_ddpm,
}


def names() -> list[str]:
    return list(SAMPLERS)


def get(name: str) -> Sampler:
    """The sampler registered under sd-webui's ``name``; an unknown name lists the known ones."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise GenpixError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None


def sample(denoiser, noise: torch.Tensor, steps: int, sampler: str = "DDIM", *, schedule: str = "uniform",
           generator: GeneratorArg = None, callback: Callable[[dict[str, Any]], None] | None = None,
           **options: Any) -> torch.Tensor:
    """The whole loop for a variance-preserving model: sigmas = denoiser.sigmas(steps, schedule),
    x = noise sqrt(sigmas[0]^2 + 1) (pure noise x_T), then the named sampler -> x0 (B, C, H, W)."""
    fn = get(sampler)
    sigmas = denoiser.sigmas(steps, schedule)
    x = noise * (sigmas[0].item() ** 2 + 1) ** 0.5
    return fn(denoiser, x, sigmas, generator=generator, callback=callback, **options)
