"""ODE and ancestral samplers on dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models"), as k-diffusion writes them
(crowsonkb/k-diffusion, sampling.py): Euler, Euler a, Heun, DPM2, DPM2 a and LMS.

All take ``(denoiser, x, sigmas, *, generator=None, callback=None, **options)``; see
:mod:`genpix.diffusion.samplers` for the contract.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genpix.diffusion.sampler_steps import (Callback, GeneratorArg, Model, add_noise, ancestral_step,
                                            check_churn, check_eta, check_inputs, check_range, churn,
                                            first_order, to_d)

INF = math.inf


@torch.no_grad()
def sample_euler(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                 callback: Callback = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = INF,
                 s_noise: float = 1.0) -> torch.Tensor:
    """Euler's method (Karras et al. 2022, Algorithm 2 with its churn; k-diffusion sample_euler)."""
    sig = check_inputs(x, sigmas)
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        x, sigma_hat = churn(x, sig[i], len(sig) - 1, generator, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat)
        x = x + to_d(x, sigma_hat, denoised) * (sig[i + 1] - sigma_hat)
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           generator: GeneratorArg = None, callback: Callback = None, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """Euler ancestral (k-diffusion sample_euler_ancestral, sd-webui "Euler a"): an Euler step
    down to sigma_down, then noise of std sigma_up (:func:`ancestral_step`)."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        x = add_noise(first_order(x, denoised, sig[i], sigma_down), sigma_up * s_noise, generator)
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


@torch.no_grad()
def sample_heun(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                callback: Callback = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = INF,
                s_noise: float = 1.0) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2): an Euler step, then the
    trapezoid rule with the slope at its end; Euler alone on the last step (to sigma = 0)."""
    sig = check_inputs(x, sigmas)
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        x, sigma_hat = churn(x, sig[i], len(sig) - 1, generator, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat)
        d, dt = to_d(x, sigma_hat, denoised), sig[i + 1] - sigma_hat
        if sig[i + 1] == 0:
            x = x + d * dt
        else:  # Algorithm 2, lines 9-11
            x_2 = x + d * dt
            d_2 = to_d(x_2, sig[i + 1], model(x_2, sig[i + 1]))
            x = x + (d + d_2) / 2 * dt
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


def _dpm2_step(model: Model, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_to: float) -> torch.Tensor:
    """One DPM-Solver-2 step from sigma to sigma_to (Lu et al. 2022, Algorithm 1 in k-diffusion's
    form): the slope at the midpoint in log sigma, sigma_mid = sqrt(sigma sigma_to); Euler when
    sigma_to = 0."""
    d = to_d(x, sigma, denoised)
    if sigma_to == 0:
        return x + d * (sigma_to - sigma)
    sigma_mid = math.exp((math.log(sigma) + math.log(sigma_to)) / 2)
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                 callback: Callback = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = INF,
                 s_noise: float = 1.0) -> torch.Tensor:
    """DPM2 (k-diffusion sample_dpm_2): Karras et al.'s churn, then a DPM-Solver-2 step
    (Lu et al. 2022, "DPM-Solver", Algorithm 1) written in sigma."""
    sig = check_inputs(x, sigmas)
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        x, sigma_hat = churn(x, sig[i], len(sig) - 1, generator, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat)
        x = _dpm2_step(model, x, denoised, sigma_hat, sig[i + 1])
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                           callback: Callback = None, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM2 a (k-diffusion sample_dpm_2_ancestral): a DPM-Solver-2 step to sigma_down, then noise
    of std sigma_up (:func:`ancestral_step`)."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        x = add_noise(_dpm2_step(model, x, denoised, sig[i], sigma_down), sigma_up * s_noise, generator)
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


def lms_coefficients(sigmas: list[float], i: int, order: int) -> list[float]:
    """Linear multistep weights for step i (k-diffusion linear_multistep_coeff): the integral over
    [sigma_i, sigma_{i+1}] of each Lagrange basis polynomial through sigma_i, ..., sigma_{i-order+1}.
    Integrated exactly (a polynomial), where k-diffusion and diffusers call scipy's quad."""
    nodes = [sigmas[i - k] for k in range(order)]
    weights = []
    for j in range(order):
        others = [nodes[k] for k in range(order) if k != j]
        roots = np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial([1.0])
        basis = roots / np.prod([nodes[j] - o for o in others])
        antiderivative = basis.integ()
        weights.append(float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i])))
    return weights


@torch.no_grad()
def sample_lms(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
               callback: Callback = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth on non-uniform sigmas; k-diffusion sample_lms, diffusers
    LMSDiscreteScheduler): x += sum_j c_j d_{i-j} over the last ``order`` slopes."""
    sig = check_inputs(x, sigmas)
    check_range("order", order, 1, 4)
    model = Model(denoiser, x, callback)
    ds: list[torch.Tensor] = []
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        ds = [to_d(x, sig[i], denoised), *ds][:order]  # newest first
        coefficients = lms_coefficients(sig, i, len(ds))
        x = x + sum(c * d for c, d in zip(coefficients, ds))
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x
