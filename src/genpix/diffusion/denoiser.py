"""Networks wrapped as denoisers D(x, sigma, **cond) -> x0, in the sigma form x = x0 + sigma eps.

A network predicts eps, v or x0 from the variance-preserving input x_t = x / sqrt(1 + sigma^2) and
a time t; the wrapper turns that into an estimate of x0 (Karras et al. 2022, eq. 7 and table 1,
with sigma_data = 1 for the VP parameterisations; k-diffusion's external.py):

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, t(sigma)),  c_in = 1/sqrt(1+sigma^2)
    eps: c_skip = 1,              c_out = -sigma
    v:   c_skip = 1/(1+sigma^2),  c_out = -sigma/sqrt(1+sigma^2)    (Salimans and Ho 2022, sec. 4)
    x0:  c_skip = 0,              c_out = 1

Networks never see sigma: discrete models get their training timestep t in [0, T-1], found by
interpolating log sigma in the table of T training sigmas; the seed's continuous model gets its
diffusion time in [0, 1] scaled by ``time_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch

from genpix.diffusion import schedules
from genpix.errors import GenpixError

Prediction = Literal["eps", "v", "x0"]
PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0")
Network = Callable[..., torch.Tensor]  # (x_t (B, C, H, W), t (B,), **cond) -> (B, C, H, W)
MAX_STEPS = 1000  # the most sampling steps any schedule gives


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise GenpixError(f"unknown parameterisation {prediction!r}; choose one of: {', '.join(PREDICTIONS)}")


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) with ``ndim`` dimensions in all."""
    return x.view(*x.shape, *([1] * (ndim - x.ndim)))


def training_target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor,
                    sigma_vp: torch.Tensor) -> torch.Tensor:
    """What the network learns to output for x_t = alpha x0 + sigma_vp eps (alpha, sigma_vp
    broadcast to x0): eps (Ho et al. 2020, eq. 14), x0, or v = alpha eps - sigma_vp x0."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return alpha * eps - sigma_vp * x0


class Denoiser:
    """D(x, sigma, **cond) -> x0 estimate for a network of one parameterisation.

    Subclasses say how sigma maps to the network's time (:meth:`sigma_to_t`) and which sigmas a
    sampling schedule visits (:meth:`sigmas`). Denoisers keep no per-call state, so one instance
    serves concurrent samplers.
    """

    def __init__(self, network: Network, prediction: str = "eps") -> None:
        check_prediction(prediction)
        self.network, self.prediction = network, prediction

    sigma_min: float
    sigma_max: float

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) of the module docstring, each shaped like sigma."""
        c_in = (sigma**2 + 1) ** -0.5
        if self.prediction == "eps":
            return torch.ones_like(sigma), -sigma, c_in
        if self.prediction == "v":
            return 1 / (sigma**2 + 1), -sigma * c_in, c_in
        return torch.zeros_like(sigma), torch.ones_like(sigma), c_in

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        """x (B, C, H, W) at noise level sigma (B,) or scalar -> x0 estimate (B, C, H, W)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.get_scalings(sigma))
        out = self.network(x * c_in, self.sigma_to_t(sigma), **cond)
        return c_skip * x + c_out * out.to(x.dtype)

    def sigmas(self, steps: int, schedule: str = "uniform") -> torch.Tensor:
        """``steps`` + 1 descending sigmas, the last 0 (float32, CPU), for a schedule type given by
        key or sd-webui label in any case (schedules.SCHEDULE_LABELS); "Automatic" here, with no
        sampler to ask, is uniform (samplers.resolve picks a sampler's own default)."""
        key = schedules.schedule_key(schedule)
        if not 1 <= steps <= MAX_STEPS:
            raise GenpixError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        if key == "karras":
            return schedules.sigmas_karras(steps, self.sigma_min, self.sigma_max)
        if key == "exponential":
            return schedules.sigmas_exponential(steps, self.sigma_min, self.sigma_max)
        if key == "beta":
            return schedules.sigmas_beta(steps, self.sigma_min, self.sigma_max)
        if key == "simple":
            return schedules.sigmas_simple(steps, self.table)
        return self._spaced_sigmas(steps, "uniform" if key == "automatic" else key)

    table: torch.Tensor  # (T,) ascending sigmas of the training timesteps

    def _spaced_sigmas(self, steps: int, spacing: str) -> torch.Tensor:
        raise NotImplementedError


class DiscreteDenoiser(Denoiser):
    """A network trained on T discrete timesteps with ``alphas_cumprod`` (T,)."""

    def __init__(self, network: Network, alphas_cumprod: torch.Tensor, prediction: str = "eps") -> None:
        super().__init__(network, prediction)
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float32).cpu()
        self.table = schedules.sigmas_from_alphas_cumprod(self.alphas_cumprod)  # (T,) ascending
        self.log_table = self.table.log()
        self.sigma_min, self.sigma_max = self.table[0].item(), self.table[-1].item()

    @property
    def timesteps(self) -> int:
        return len(self.table)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep of sigma (B,) by linear interpolation in log sigma (k-diffusion)."""
        log_table = self.log_table.to(sigma.device)
        log_sigma = sigma.float().log()
        low = (log_sigma[:, None] >= log_table[None]).sum(1).sub(1).clamp(0, len(log_table) - 2)
        lo, hi = log_table[low], log_table[low + 1]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return (low + w).to(sigma.dtype)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low = t.floor().long().clamp(0, self.timesteps - 1)
        high = (low + 1).clamp(max=self.timesteps - 1)
        w = t - low
        interpolated = ((1 - w) * self.log_table[low] + w * self.log_table[high]).exp()
        return torch.where(w == 0, self.table[low], interpolated)  # exact at whole timesteps

    def sigmas_at(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Sigmas at the given (descending) training timesteps, then 0."""
        return schedules.append_zero(self.t_to_sigma(torch.as_tensor(timesteps)))

    def _spaced_sigmas(self, steps: int, spacing: str) -> torch.Tensor:
        return self.sigmas_at(schedules.spaced_timesteps(steps, self.timesteps, spacing))


class DiscreteEpsDenoiser(DiscreteDenoiser):
    """Wraps eps(x_t, t, **cond) of a DDPM (Ho et al. 2020)."""

    def __init__(self, network: Network, alphas_cumprod: torch.Tensor) -> None:
        super().__init__(network, alphas_cumprod, "eps")


class DiscreteVDenoiser(DiscreteDenoiser):
    """Wraps v(x_t, t, **cond) (Salimans and Ho 2022; Stable Diffusion 2 768-v)."""

    def __init__(self, network: Network, alphas_cumprod: torch.Tensor) -> None:
        super().__init__(network, alphas_cumprod, "v")


class ContinuousCosineDenoiser(Denoiser):
    """The seed's model on continuous diffusion times t in [0, 1] (listing 17.7); the network
    receives t * time_scale so its sinusoidal embedding sees the range a discrete model sees."""

    def __init__(self, network: Network, prediction: str = "eps", *, min_signal_rate: float = 0.02,
                 max_signal_rate: float = 0.95, time_scale: float = 1000.0) -> None:
        super().__init__(network, prediction)
        self.rates = {"min_signal_rate": min_signal_rate, "max_signal_rate": max_signal_rate}
        self.time_scale = time_scale
        self.sigma_min = schedules.signal_cosine_sigma(torch.tensor(0.0, dtype=torch.float64), **self.rates).item()
        self.sigma_max = schedules.signal_cosine_sigma(torch.tensor(1.0, dtype=torch.float64), **self.rates).item()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        return schedules.signal_cosine_time(sigma.float(), **self.rates).to(sigma.dtype) * self.time_scale

    @property
    def table(self) -> torch.Tensor:
        """Sigmas at ``time_scale`` evenly spaced times in [0, 1], ascending, standing in for a
        discrete model's training sigmas (for the "simple" schedule)."""
        times = torch.linspace(0, 1, max(2, int(self.time_scale)), dtype=torch.float64)
        return schedules.signal_cosine_sigma(times, **self.rates).float()

    def _spaced_sigmas(self, steps: int, spacing: str) -> torch.Tensor:
        """Evenly spaced diffusion times 1, 1 - 1/n, ..., 1/n as the seed's generate() walks them,
        then 0; every timestep spacing (uniform, normal, sgm_uniform, ddim, leading, trailing) is
        this one for a continuous-time model."""
        times = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
        return schedules.append_zero(schedules.signal_cosine_sigma(times, **self.rates)).float()


class ClippedDenoiser:
    """x0 estimates clipped to the data range [low, high]: Ho et al. (2020) clip the predicted x0 to
    [-1, 1] when sampling (diffusers' ``clip_sample``). For a pixel model this removes the isolated
    out-of-range pixels ("salt") a briefly trained network leaves; it changes nothing for a
    well-trained one. Not for latent models, whose latents are unbounded."""

    def __init__(self, denoiser: Any, low: float = -1.0, high: float = 1.0) -> None:
        self.denoiser, self.low, self.high = denoiser, low, high

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.denoiser(x, sigma, **cond).clamp(self.low, self.high)


class CFGDenoiser:
    """Classifier-free guidance (Ho and Salimans 2022, eq. 6) as a denoiser:
    D = D(x | uncond) + scale (D(x | cond) - D(x | uncond)), both in one batch [uncond, cond].

    ``cond`` and ``uncond`` map keyword names to tensors with the batch dimension first. ``uncond``
    is whatever the guidance pushes away from: the null condition (empty prompt, null class) or a
    negative condition (a negative prompt's embedding, another class); nothing else changes.
    Guiding the x0 estimates equals guiding the network outputs for any one sigma (D is affine in
    the output).

    guidance_rescale = phi in [0, 1] (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
    Steps are Flawed", eq. 15-16): the guided network output F_cfg is rescaled to the standard
    deviation of the conditional one, F_rescaled = F_cfg std(F_cond) / std(F_cfg) (per image), and
    blended, F = phi F_rescaled + (1 - phi) F_cfg; done on the wrapped denoiser's own
    parameterisation (eps or v), as diffusers' rescale_noise_cfg does on its noise prediction.

    cutoff_sigma: at sigma <= cutoff_sigma only the conditional pass runs (half the work), e.g.
    :func:`guidance_cutoff_sigma` (sigmas, 0.6) to guide only the first 60% of the steps.
    """

    def __init__(self, denoiser: Denoiser, cond: dict[str, torch.Tensor], uncond: dict[str, torch.Tensor],
                 scale: float, *, guidance_rescale: float = 0.0, cutoff_sigma: float = 0.0) -> None:
        if set(cond) != set(uncond):
            raise GenpixError("classifier-free guidance needs the same condition keys for cond and uncond")
        if not 0 <= guidance_rescale <= 1:
            raise GenpixError(f"guidance_rescale must be between 0 and 1, got {guidance_rescale}")
        if not cutoff_sigma >= 0:
            raise GenpixError(f"cutoff_sigma must be at least 0, got {cutoff_sigma}")
        self.denoiser, self.cond, self.uncond, self.scale = denoiser, cond, uncond, float(scale)
        self.guidance_rescale, self.cutoff_sigma = float(guidance_rescale), float(cutoff_sigma)
        self.sigma_min, self.sigma_max = denoiser.sigma_min, denoiser.sigma_max
        self.sigmas = denoiser.sigmas

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(b)
        if bool((sigma <= self.cutoff_sigma).all()):
            return self.denoiser(x, sigma, **self.cond, **extra)
        joined = {k: torch.cat([self.uncond[k], self.cond[k]]) for k in self.cond}
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **joined, **extra)
        uncond, cond = both[:b], both[b:]
        guided = uncond + self.scale * (cond - uncond)
        if self.guidance_rescale == 0:
            return guided
        return self._rescale(x, sigma, cond, guided)

    def _rescale(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                 guided: torch.Tensor) -> torch.Tensor:
        """Lin et al. (2023) eq. 15-16 on the network outputs F = (D - c_skip x) / c_out."""
        c_skip, c_out, _ = (append_dims(c, x.ndim) for c in self.denoiser.get_scalings(sigma))
        out_cond, out_cfg = (cond - c_skip * x) / c_out, (guided - c_skip * x) / c_out
        dims = list(range(1, x.ndim))
        rescaled = out_cfg * (out_cond.std(dim=dims, keepdim=True) / out_cfg.std(dim=dims, keepdim=True))  # eq. 15
        out = self.guidance_rescale * rescaled + (1 - self.guidance_rescale) * out_cfg  # eq. 16
        return c_skip * x + c_out * out


def guidance_cutoff_sigma(sigmas: torch.Tensor, fraction: float) -> float:
    """The cutoff_sigma that keeps guidance on the first ``fraction`` of the steps of ``sigmas``:
    steps i < ceil(fraction * steps) run both passes, later ones only the conditional one."""
    if not 0 <= fraction <= 1:
        raise GenpixError(f"guidance cut-off fraction must be between 0 and 1, got {fraction}")
    steps = len(sigmas) - 1
    return float(sigmas[math.ceil(fraction * steps - 1e-9)])
