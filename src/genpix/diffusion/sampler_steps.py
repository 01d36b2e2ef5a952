"""The small pieces every sampler is built from, in the sigma form x = x0 + sigma eps.

k-diffusion keeps its samplers short by sharing ``to_d``, ``get_ancestral_step`` and a noise
sampler (crowsonkb/k-diffusion, sampling.py); these are the same pieces, plus the first-order
exponential-integrator step that DDIM, DPM-Solver++(1) and Euler all reduce to in this form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from genpix.errors import GenpixError

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[[dict[str, Any]], None] | None


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


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma = (x - D(x, sigma)) / sigma, the probability-flow ODE in Karras et al.'s (2022)
    form with s(t) = 1, sigma(t) = t (k-diffusion to_d); it is also the eps estimate."""
    return (x - denoised) / sigma


def first_order(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """x_next = D + (sigma_next / sigma) (x - D): DDIM with eta = 0 (Song et al. 2020, eq. 12),
    DPM-Solver++(1) (Lu et al. 2022, with h = log(sigma / sigma_next)) and one Euler step
    of the ODE, which are all the same update in the sigma form."""
    return denoised + (x - denoised) * (sigma_next / sigma)


def dpm_lambda(sigma: float) -> float:
    """lambda = log(alpha / sigma_vp) = -log sigma, the half log-SNR DPM-Solver steps in."""
    return -math.log(sigma)


def add_noise(x: torch.Tensor, std: float, generator: GeneratorArg) -> torch.Tensor:
    """x + std z, z ~ N(0, I) from ``generator``; draws nothing when std is 0 (so the last step,
    where every sampler's noise vanishes, leaves the generators untouched)."""
    return x + randn_like(x, generator) * std if std > 0 else x


def churn(x: torch.Tensor, sigma: float, steps: int, generator: GeneratorArg, s_churn: float,
          s_tmin: float, s_tmax: float, s_noise: float) -> tuple[torch.Tensor, float]:
    """(x_hat, sigma_hat): Karras et al. (2022), Algorithm 2 lines 4-6: raise the noise level to
    sigma_hat = sigma (1 + gamma), gamma = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax],
    adding fresh noise of std sqrt(sigma_hat^2 - sigma^2) S_noise."""
    gamma = min(s_churn / steps, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma == 0:
        return x, sigma
    sigma_hat = sigma * (gamma + 1)
    return add_noise(x, (sigma_hat**2 - sigma**2) ** 0.5 * s_noise, generator), sigma_hat


def check_inputs(x: torch.Tensor, sigmas: torch.Tensor) -> list[float]:
    """The sigmas as Python floats, after checking the shapes every sampler relies on."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise GenpixError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    if x.ndim != 4:
        raise GenpixError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    return [float(s) for s in sigmas]


def check_range(name: str, value: float, low: float, high: float) -> None:
    """A sampler option outside [low, high] is a one-line error naming the range."""
    if not low <= value <= high:
        raise GenpixError(f"{name} must be between {low} and {high}, got {value}")


def check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    check_range("s_churn", s_churn, 0.0, 100.0)
    check_range("s_noise", s_noise, 0.0, 2.0)
    check_range("s_tmin", s_tmin, 0.0, math.inf)
    check_range("s_tmax", s_tmax, s_tmin, math.inf)


def check_eta(eta: float, s_noise: float = 1.0) -> None:
    check_range("eta", eta, 0.0, 1.0)
    check_range("s_noise", s_noise, 0.0, 2.0)


class Model:
    """Calls the denoiser at a Python-float sigma and reports each step to the callback."""

    def __init__(self, denoiser, x: torch.Tensor, callback: Callback) -> None:
        self.denoiser, self.callback = denoiser, callback
        self.device, self.dtype = x.device, x.dtype

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.denoiser(x, torch.tensor(sigma, dtype=self.dtype, device=self.device))

    def report(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float, denoised: torch.Tensor) -> None:
        """After step i: the new x, the step's sigmas and its x0 estimate (a preview)."""
        if self.callback is not None:
            self.callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
