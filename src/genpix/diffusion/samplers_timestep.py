"""Samplers sd-webui runs over the model's own timesteps: DDIM, DDPM, PLMS, UniPC and LCM, here
written over any sigmas in the sigma form x = x0 + sigma eps (see :mod:`genpix.diffusion.samplers`).
"""

from __future__ import annotations

import math

import torch

from genpix.diffusion.sampler_steps import (Callback, GeneratorArg, Model, add_noise, check_inputs, check_range,
                                            dpm_lambda, first_order, to_d)
from genpix.diffusion.samplers_karras import sample_euler_ancestral
from genpix.errors import GenpixError


@torch.no_grad()
def sample_ddim(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                callback: Callback = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2020, eq. 12) over the given sigmas; eta = 0 is deterministic.

    In the sigma form eq. 12 reads x_next = x0_hat + sigma_down eps_hat + sigma_up z (see
    :func:`ancestral_step`), which is the Euler ancestral step with this eta; with eta = 0 it is
    Euler's method on the probability-flow ODE.
    """
    return sample_euler_ancestral(denoiser, x, sigmas, generator=generator, callback=callback, eta=eta)


@torch.no_grad()
def sample_ddpm(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                callback: Callback = None) -> torch.Tensor:
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020): x_{t-1} = mu~(x_t, x0_hat) + sigma_t z
    with the posterior variance sigma_t^2 = beta~_t (eq. 7; diffusers' "fixed_small"), over any
    subsequence of timesteps (beta_t = 1 - alpha_bar_t / alpha_bar_prev); no noise on the last step.
    This is DDIM with eta = 1 (Song et al. 2020, sec. 4.1)."""
    return sample_euler_ancestral(denoiser, x, sigmas, generator=generator, callback=callback, eta=1.0)


# Adams-Bashforth weights of the pseudo linear multistep method, newest eps first
# (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds", PLMS).
PLMS_WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


@torch.no_grad()
def sample_plms(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                callback: Callback = None) -> torch.Tensor:
    """PLMS (Liu et al. 2022; CompVis' PLMSSampler, diffusers' PNDMScheduler with
    skip_prk_steps): the DDIM transfer x_next = x + (sigma_next - sigma) eps' (PNDM's transfer
    part in the sigma form) with eps' a 4-step Adams-Bashforth combination of past eps, which assumes evenly spaced
    timesteps; the first step is a pseudo improved Euler step (two evaluations, eps averaged)."""
    sig = check_inputs(x, sigmas)
    model = Model(denoiser, x, callback)
    eps: list[torch.Tensor] = []  # newest first
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        eps = [to_d(x, sig[i], denoised), *eps][:4]
        if len(eps) == 1 and sig[i + 1] > 0:  # pseudo improved Euler (PNDM's first PLMS step)
            x_2 = x + eps[0] * (sig[i + 1] - sig[i])
            eps_prime = (eps[0] + to_d(x_2, sig[i + 1], model(x_2, sig[i + 1]))) / 2
        else:
            eps_prime = sum(w * e for w, e in zip(PLMS_WEIGHTS[len(eps) - 1], eps))
        x = x + eps_prime * (sig[i + 1] - sig[i])
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


def unipc_coefficients(rks: list[float], hh: float, order: int,
                       variant: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(R, b, B(h)) of UniPC's linear system R rho = b (Zhao et al. 2023, UniP-p / UniC-p with
    the data prediction, hh = -h): R[k] = r^k, b[k] = k! phi_{k+1}(hh) / B(h), with
    B(h) = hh (bh1) or e^hh - 1 (bh2)."""
    h_phi_k = math.expm1(hh) / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    R, b, factorial = [], [], 1
    for k in range(1, order + 1):
        R.append([r ** (k - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), b_h


def _unipc_update(x: torch.Tensor, history: list[tuple[torch.Tensor, float]], sigma: float,
                  sigma_next: float, order: int, variant: str, model_next: torch.Tensor | None) -> torch.Tensor:
    """UniP (model_next None; Zhao et al. 2023) or UniC (model_next = D at the predicted point)
    from sigma to sigma_next with ``order`` past (D, sigma) pairs of
    ``history`` (newest first, history[0] at sigma)."""
    m0 = history[0][0]
    if sigma_next == 0:
        return m0  # h = inf: the exponential integrator returns the x0 estimate
    h = dpm_lambda(sigma_next) - dpm_lambda(sigma)
    rks = [(dpm_lambda(s_k) - dpm_lambda(sigma)) / h for _, s_k in history[1:order]]
    d1s = [(m_k - m0) / r for (m_k, _), r in zip(history[1:order], rks)]
    R, b, b_h = unipc_coefficients([*rks, 1.0], -h, order, variant)
    x_next = first_order(x, m0, sigma, sigma_next)
    if model_next is None:  # predictor
        if not d1s:
            return x_next
        rhos = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
        return x_next - b_h * sum(rho * d for rho, d in zip(rhos, d1s))
    rhos = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()  # corrector
    correction = sum((rho * d for rho, d in zip(rhos[:-1], d1s)), torch.zeros_like(x))
    return x_next - b_h * (correction + rhos[-1] * (model_next - m0))


@torch.no_grad()
def sample_unipc(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                 callback: Callback = None, order: int = 3, variant: str = "bh1",
                 lower_order_final: bool = True) -> torch.Tensor:
    """UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
    of Diffusion Models") with the data prediction: each step's model output first corrects the
    current point (UniC, no extra evaluation), then predicts the next (UniP) from the last
    ``order`` outputs. Defaults are sd-webui's (bh1, order 3, lower order at the end)."""
    sig = check_inputs(x, sigmas)
    check_range("order", order, 1, 3)
    if variant not in ("bh1", "bh2"):
        raise GenpixError(f"unknown UniPC variant {variant!r}; choose one of: bh1, bh2")
    model = Model(denoiser, x, callback)
    history: list[tuple[torch.Tensor, float]] = []  # (D, sigma), newest first
    x_last, step_order = x, 1
    steps = len(sig) - 1
    for i in range(steps):
        denoised = model(x, sig[i])
        if history:  # UniC with the order of the last predictor
            x = _unipc_update(x_last, history, sig[i - 1], sig[i], step_order, variant, denoised)
        history = [(denoised, sig[i]), *history][:order]
        step_order = min(order, len(history), steps - i if lower_order_final else order)
        x_last = x
        x = _unipc_update(x, history, sig[i], sig[i + 1], step_order, variant, None)
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


@torch.no_grad()
def sample_lcm(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
               callback: Callback = None) -> torch.Tensor:
    """Multistep consistency sampling (Luo et al. 2023, "Latent Consistency Models", Algorithm 1;
    Song et al. 2023, Algorithm 1): jump to the x0 estimate, then re-noise it to the next sigma
    with fresh noise (sd-webui's sample_lcm). For LCM-distilled models."""
    sig = check_inputs(x, sigmas)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        x = add_noise(denoised, sig[i + 1], generator)
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x
