"""Noise schedules: betas for training, sigmas for sampling (pure functions, no state).

Two ways of writing one forward process are used throughout (Ho et al. 2020; Karras et al. 2022):

    variance preserving (training):  x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps
    sigma form (sampling):           x = x_t / sqrt(alpha_bar_t) = x0 + sigma eps,
                                     sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t)

Samplers walk down a tensor of sigmas that ends in 0 (the clean image); the functions here make
those tensors. The seed's continuous "cosine" schedule (signal rate from 0.95 down to 0.02 over
diffusion time 0..1, listing 17.7) is the same process with signal = cos(angle), noise = sin(angle),
so sigma = tan(angle).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from genpix.errors import GenpixError

BetaSchedule = Literal["linear", "scaled_linear", "cosine"]
BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "cosine")
SigmaSchedule = Literal["uniform", "leading", "trailing", "karras", "exponential"]
SIGMA_SCHEDULES: tuple[str, ...] = ("uniform", "leading", "trailing", "karras", "exponential")


def _choose(kind: str, what: str, allowed: tuple[str, ...]) -> None:
    if kind not in allowed:
        raise GenpixError(f"unknown {what} {kind!r}; choose one of: {', '.join(allowed)}")


# --- discrete betas (training) ------------------------------------------------------------------


def betas(kind: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
          beta_end: float = 0.02) -> torch.Tensor:
    """beta_1..beta_T, float32 (T,).

    linear: evenly spaced from beta_start to beta_end (Ho et al. 2020, sec. 4: 1e-4 .. 0.02);
    scaled_linear: evenly spaced in sqrt(beta) (Stable Diffusion: 0.00085 .. 0.012);
    cosine: alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008, each beta clipped at
    0.999 (Nichol and Dhariwal 2021, eq. 17); beta_start and beta_end are unused.
    """
    _choose(kind, "beta schedule", BETA_SCHEDULES)
    if timesteps < 1:
        raise GenpixError(f"timesteps must be at least 1, got {timesteps}")
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float32) ** 2

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    out = [min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999)
           for i in range(timesteps)]
    return torch.tensor(out, dtype=torch.float32)


def alphas_cumprod(betas_: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) (Ho et al. 2020, eq. 4), same dtype as betas."""
    return torch.cumprod(1.0 - betas_, dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod_: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t): the sigma-form noise level of step t."""
    return ((1 - alphas_cumprod_) / alphas_cumprod_) ** 0.5


# --- the seed's continuous cosine schedule -------------------------------------------------------


def signal_cosine(diffusion_times: torch.Tensor, min_signal_rate: float = 0.02,
                  max_signal_rate: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise_rates, signal_rates) at diffusion times in [0, 1] (seed 000, listing 17.7).

    angle = acos(max_signal_rate) + t (acos(min_signal_rate) - acos(max_signal_rate));
    signal = cos(angle), noise = sin(angle), so noise^2 + signal^2 = 1.
    """
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    angles = start + diffusion_times * (end - start)
    return torch.sin(angles), torch.cos(angles)


def signal_cosine_sigma(diffusion_times: torch.Tensor, min_signal_rate: float = 0.02,
                        max_signal_rate: float = 0.95) -> torch.Tensor:
    """sigma = noise / signal = tan(angle) of :func:`signal_cosine`."""
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    return torch.tan(start + diffusion_times * (end - start))


def signal_cosine_time(sigma: torch.Tensor, min_signal_rate: float = 0.02,
                       max_signal_rate: float = 0.95) -> torch.Tensor:
    """Inverse of :func:`signal_cosine_sigma`: diffusion time in [0, 1] of a sigma."""
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    return (torch.atan(sigma) - start) / (end - start)


# --- sigma discretisations (sampling) -----------------------------------------------------------


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n sigmas from sigma_max to sigma_min evenly spaced in sigma^(1/rho), then 0 (Karras et al.
    2022, eq. 5)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho).float()


def sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n sigmas from sigma_max to sigma_min evenly spaced in log sigma, then 0."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n,
                                      dtype=torch.float64).exp()).float()


def discrete_timesteps(n: int, timesteps: int, spacing: str = "uniform") -> torch.Tensor:
    """n training timesteps (float64, descending) a strided sampler visits.

    uniform: linspace(T - 1, 0, n) (k-diffusion's get_sigmas; diffusers' "linspace");
    leading: (T // n) * [n - 1, ..., 1, 0] (DDIM's strided subsequence, Song et al. 2020 sec. 4.2;
    diffusers' default "leading" with steps_offset = 0);
    trailing: round(T - T/n * [0, 1, ..., n - 1]) - 1 (always starts at T - 1).
    """
    _choose(spacing, "timestep spacing", ("uniform", "leading", "trailing"))
    if not 1 <= n <= timesteps:
        raise GenpixError(f"steps must be between 1 and the model's {timesteps} timesteps, got {n}")
    if spacing == "uniform":
        return torch.linspace(timesteps - 1, 0, n, dtype=torch.float64)
    if spacing == "leading":
        return (torch.arange(n, dtype=torch.float64) * (timesteps // n)).flip(0)
    return (torch.arange(timesteps, 0, -timesteps / n, dtype=torch.float64).round() - 1)[:n]
