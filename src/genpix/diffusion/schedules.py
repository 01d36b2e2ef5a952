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

import numpy as np
import torch

from genpix.errors import GenpixError

BetaSchedule = Literal["linear", "scaled_linear", "cosine"]
BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "cosine")
# Schedule types: sd-webui's (modules/sd_schedulers.py, key -> label) and diffusers' two other
# timestep spacings. "automatic" means the sampler's default (genpix.diffusion.samplers.resolve).
SCHEDULE_LABELS: dict[str, str] = {
    "automatic": "Automatic", "uniform": "Uniform", "karras": "Karras", "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform", "simple": "Simple", "normal": "Normal", "ddim": "DDIM", "beta": "Beta",
    "leading": "Leading", "trailing": "Trailing"}
SigmaSchedule = Literal["uniform", "karras", "exponential", "sgm_uniform", "simple", "normal", "ddim", "beta",
                        "leading", "trailing"]
SIGMA_SCHEDULES: tuple[str, ...] = tuple(k for k in SCHEDULE_LABELS if k != "automatic")
# Noise schedules of a discrete model: its training alphas_cumprod ("default"), or that schedule
# rescaled to zero terminal SNR (:func:`rescale_zero_terminal_snr`); sd-webui's sd_noise_schedule labels.
NOISE_SCHEDULE_LABELS: dict[str, str] = {"default": "Default", "ztsnr": "Zero Terminal SNR"}
# sd-webui's last alpha_bar after the rescale (modules/sd_models.py rescale_zero_terminal_snr_abar) in
# place of 0, so the last sigma stays finite: sqrt((1 - a) / a) = 4518.8 (diffusers' Euler: 2**-24)
ZTSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08


def _choose(kind: str, what: str, allowed: tuple[str, ...]) -> None:
    if kind not in allowed:
        raise GenpixError(f"unknown {what} {kind!r}; choose one of: {', '.join(allowed)}")


def _label_key(name: str, labels: dict[str, str], what: str) -> str:
    """The key of ``name`` given by key or label in any case; unknown names list both."""
    wanted = str(name).strip().lower()
    for key, label in labels.items():
        if wanted in (key, label.lower()):
            return key
    raise GenpixError(f"unknown {what} {name!r}; choose one of: "
                      f"{', '.join(labels.values())} (or the keys {', '.join(labels)})")


def schedule_key(name: str) -> str:
    """The key of a schedule type given by key or sd-webui label, any case ("SGM Uniform",
    "sgm_uniform", "karras" -> "sgm_uniform", "sgm_uniform", "karras"); unknown names list both."""
    return _label_key(name, SCHEDULE_LABELS, "schedule type")


def noise_schedule_key(name: str) -> str:
    """The key of a noise schedule given by key or sd-webui label (its ``sd_noise_schedule``
    setting), any case: "default" / "Default", "ztsnr" / "Zero Terminal SNR"."""
    return _label_key(name, NOISE_SCHEDULE_LABELS, "noise schedule")


def schedule_labels() -> list[str]:
    """Every spelling :func:`schedule_key` accepts (labels and keys)."""
    return sorted({*SCHEDULE_LABELS, *SCHEDULE_LABELS.values()})


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


def rescale_zero_terminal_snr(alphas_cumprod_: torch.Tensor,
                              last: float = ZTSNR_LAST_ALPHA_BAR) -> torch.Tensor:
    """alpha_bar (T,) rescaled so the last timestep has zero SNR (Lin et al. 2023, "Common
    Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1): sqrt(alpha_bar) is
    shifted so its last entry is 0 and scaled so its first entry is unchanged,

        s = sqrt(alpha_bar);  s <- (s - s_T) s_1 / (s_1 - s_T);  alpha_bar <- s^2,

    then the last entry is set to ``last`` (sd-webui's 4.897e-08) rather than 0, which keeps
    sigma_T finite. Computed in float64, returned in the input's dtype; the input is not changed."""
    s = alphas_cumprod_.double().sqrt()
    s_1, s_T = s[0], s[-1]
    rescaled = ((s - s_T) * (s_1 / (s_1 - s_T))) ** 2
    rescaled[-1] = last
    return rescaled.to(alphas_cumprod_.dtype)


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


def spaced_timesteps(n: int, timesteps: int, spacing: str) -> torch.Tensor:
    """n training timesteps (float64, descending) of a discrete model for the schedule types that
    pick timesteps: :func:`discrete_timesteps` plus sd-webui's

    normal: linspace(T - 1, 0, n), the same as uniform for a discrete model (sd_schedulers.py);
    sgm_uniform: linspace(T - 1, 0, n + 1) without its last entry (SGM's discretisation);
    ddim: (T // n) * [n - 1, ..., 0] + 1, the CompVis DDIM timesteps with SD's steps_offset 1
    (the offset is dropped only where it would pass T - 1, so there are always n of them).
    """
    if spacing == "normal":
        spacing = "uniform"
    if spacing not in ("sgm_uniform", "ddim"):
        return discrete_timesteps(n, timesteps, spacing)
    if not 1 <= n <= timesteps:
        raise GenpixError(f"steps must be between 1 and the model's {timesteps} timesteps, got {n}")
    if spacing == "sgm_uniform":
        return torch.linspace(timesteps - 1, 0, n + 1, dtype=torch.float64)[:-1]
    stride = timesteps // n
    offset = min(1, timesteps - 1 - (n - 1) * stride)
    return (torch.arange(n, dtype=torch.float64) * stride + offset).flip(0)


def sigmas_simple(n: int, table: torch.Tensor) -> torch.Tensor:
    """sd-webui's "Simple": every (T / n)-th entry of the ascending table of T training sigmas,
    walked from the top, then 0."""
    if not 1 <= n <= len(table):
        raise GenpixError(f"steps must be between 1 and the model's {len(table)} timesteps, got {n}")
    picks = [len(table) - 1 - int(i * len(table) / n) for i in range(n)]
    return append_zero(table[picks].float())


def _betainc(a: float, b: float, x: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Regularised incomplete beta I_x(a, b) for x in (0, 1), by its continued fraction (modified
    Lentz; Numerical Recipes, sec. 6.4), using I_x(a, b) = 1 - I_{1-x}(b, a) where it converges
    slowly."""
    swap = x > (a + 1) / (a + b + 2)
    aa, bb, xx = np.where(swap, b, a), np.where(swap, a, b), np.where(swap, 1 - x, x)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    front = np.exp(aa * np.log(xx) + bb * np.log1p(-xx) - log_beta) / aa

    def guard(v: np.ndarray) -> np.ndarray:
        return np.where(np.abs(v) < 1e-300, 1e-300, v)

    c, d = np.ones_like(xx), 1 / guard(1 - (aa + bb) * xx / (aa + 1))
    h = d.copy()
    for m in range(1, iterations + 1):
        for num in (m * (bb - m) * xx / ((aa + 2 * m - 1) * (aa + 2 * m)),
                    -(aa + m) * (aa + bb + m) * xx / ((aa + 2 * m) * (aa + 2 * m + 1))):
            d, c = 1 / guard(1 + num * d), guard(1 + num / c)
            h = h * d * c
        if np.all(np.abs(d * c - 1) < 1e-15):
            break
    out = front * h
    return np.where(swap, 1 - out, out)


def beta_ppf(q: np.ndarray, a: float, b: float) -> np.ndarray:
    """Quantiles of the Beta(a, b) distribution (float64), by bisection on :func:`_betainc`."""
    q = np.asarray(q, dtype=np.float64)
    lo, hi = np.zeros_like(q), np.ones_like(q)
    with np.errstate(divide="ignore"):  # log(0) -> -inf -> I = 0 or 1 at the very ends
        for _ in range(60):
            mid = (lo + hi) / 2
            below = _betainc(a, b, mid) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(q <= 0, 0.0, np.where(q >= 1, 1.0, (lo + hi) / 2))


def sigmas_beta(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """n sigmas sigma_min + F^-1(1 - i/(n-1)) (sigma_max - sigma_min), F the Beta(alpha, beta) CDF,
    then 0 (Lee et al. 2024, "Beta Sampling is All You Need"; sd-webui's and diffusers' 0.6, 0.6)."""
    if n == 1:
        return append_zero(torch.tensor([sigma_max]))
    quantiles = beta_ppf(1 - np.linspace(0, 1, n), alpha, beta)
    return append_zero(torch.from_numpy(sigma_min + quantiles * (sigma_max - sigma_min)).float())
