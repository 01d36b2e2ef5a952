"""The DPM-Solver++ family (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models"), as k-diffusion writes them: DPM++ 2M, DPM++ 2S a, DPM++ SDE,
DPM++ 2M SDE and DPM++ 3M SDE.

They step in lambda = -log sigma with h = lambda_next - lambda; the first-order update
x_next = D + (sigma_next / sigma)(x - D) is :func:`first_order`. The SDE variants add the noise of
the data-prediction SDE solver (SDE-DPM-Solver++, Lu et al. 2022), with ``eta`` scaling it.
Their noise is plain N(0, I) per step from the image's generator, where k-diffusion and
sd-webui use a Brownian tree (torchsde); see docs/samplers.md.
"""

from __future__ import annotations

import math

import torch

from genpix.diffusion.sampler_steps import (Callback, GeneratorArg, Model, add_noise, ancestral_step,
                                            check_eta, check_inputs, check_range, dpm_lambda, first_order)
from genpix.errors import GenpixError


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                    callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; k-diffusion sample_dpmpp_2m): the first-order
    update applied to D_i + (D_i - D_{i-1}) / (2 r), r = h_{i-1} / h_i; first order on the first
    step and on the last (to sigma = 0, where it returns D)."""
    sig = check_inputs(x, sigmas)
    model = Model(denoiser, x, callback)
    old_denoised = None
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        if old_denoised is None or sig[i + 1] == 0:
            x = first_order(x, denoised, sig[i], sig[i + 1])
        else:
            h = dpm_lambda(sig[i + 1]) - dpm_lambda(sig[i])
            r = (dpm_lambda(sig[i]) - dpm_lambda(sig[i - 1])) / h
            x = first_order(x, denoised + (denoised - old_denoised) / (2 * r), sig[i], sig[i + 1])
        old_denoised = denoised
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


def _midpoint(model: Model, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_to: float,
              eta: float, generator: GeneratorArg, s_noise: float, r: float = 0.5) -> torch.Tensor:
    """D at the intermediate point of DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1): lambda_s =
    lambda + r h, reached by a first-order (ancestral when eta > 0) step, combined as
    (1 - 1/(2r)) D + 1/(2r) D(x_s, sigma_s)."""
    lam = dpm_lambda(sigma)
    sigma_s = math.exp(-(lam + r * (dpm_lambda(sigma_to) - lam)))
    sigma_down, sigma_up = ancestral_step(sigma, sigma_s, eta)
    x_s = add_noise(first_order(x, denoised, sigma, sigma_down), sigma_up * s_noise, generator)
    fac = 1 / (2 * r)
    return (1 - fac) * denoised + fac * model(x_s, sigma_s)


@torch.no_grad()
def sample_dpmpp_2s_ancestral(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                              generator: GeneratorArg = None, callback: Callback = None, eta: float = 1.0,
                              s_noise: float = 1.0) -> torch.Tensor:
    """DPM++ 2S a (k-diffusion sample_dpmpp_2s_ancestral): a DPM-Solver++(2S) step (Lu et al. 2022,
    Algorithm 1, r = 1/2) down to sigma_down, then noise of std sigma_up; Euler to sigma = 0."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        if sigma_down > 0:  # the intermediate point is reached without noise (eta 0 there)
            denoised_2 = _midpoint(model, x, denoised, sig[i], sigma_down, eta=0.0, generator=None, s_noise=0.0)
            x = first_order(x, denoised_2, sig[i], sigma_down)
        else:
            x = first_order(x, denoised, sig[i], sigma_down)
        x = add_noise(x, sigma_up * s_noise, generator)
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


@torch.no_grad()
def sample_dpmpp_sde(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                     callback: Callback = None, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5) -> torch.Tensor:
    """DPM++ SDE (k-diffusion sample_dpmpp_sde): DPM-Solver++(2S) with ancestral noise on both
    stages (to lambda + r h, then to lambda_next); Euler to sigma = 0."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    check_range("r", r, 0.01, 1.0)
    model = Model(denoiser, x, callback)
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        if sig[i + 1] == 0:
            x = first_order(x, denoised, sig[i], 0.0)
        else:
            denoised_d = _midpoint(model, x, denoised, sig[i], sig[i + 1], eta, generator, s_noise, r)
            sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
            x = add_noise(first_order(x, denoised_d, sig[i], sigma_down), sigma_up * s_noise, generator)
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


def _sde_first_order(x: torch.Tensor, denoised: torch.Tensor, h: float, eta: float) -> torch.Tensor:
    """The data-prediction SDE step without its noise: x_next = (sigma_next / sigma) e^{-eta h} x
    + (1 - e^{-(1 + eta) h}) D (SDE-DPM-Solver++(1) of Lu et al. 2022 at eta = 1; eta = 0: the ODE)."""
    h_eta = h * (1 + eta)
    return math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised


def _sde_noise_std(sigma_next: float, h: float, eta: float) -> float:
    """sigma_next sqrt(1 - e^{-2 eta h}), the std of the SDE step's fresh noise."""
    return sigma_next * math.sqrt(-math.expm1(-2 * eta * h))


@torch.no_grad()
def sample_dpmpp_2m_sde(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                        callback: Callback = None, eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint") -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022; k-diffusion sample_dpmpp_2m_sde), with the
    second-order correction of the midpoint or heun solver type (sd-webui "DPM++ 2M SDE" and
    "DPM++ 2M SDE Heun"); returns D on the last step (to sigma = 0)."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    if solver_type not in ("midpoint", "heun"):
        raise GenpixError(f"unknown solver_type {solver_type!r}; choose one of: midpoint, heun")
    model = Model(denoiser, x, callback)
    old_denoised, h_last = None, None
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        if sig[i + 1] == 0:
            x, h = denoised, None
        else:
            h = dpm_lambda(sig[i + 1]) - dpm_lambda(sig[i])
            x = _sde_first_order(x, denoised, h, eta)
            if old_denoised is not None:
                r, h_eta = h_last / h, h * (1 + eta)
                phi_1 = -math.expm1(-h_eta)  # 1 - e^{-(1 + eta) h}
                weight = 0.5 * phi_1 if solver_type == "midpoint" else 1 - phi_1 / h_eta
                x = x + weight / r * (denoised - old_denoised)
            x = add_noise(x, _sde_noise_std(sig[i + 1], h, eta) * s_noise, generator)
        old_denoised, h_last = denoised, h
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                        callback: Callback = None, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """SDE-DPM-Solver++(3M) (k-diffusion sample_dpmpp_3m_sde): the SDE step with second- and
    third-order corrections from the last two x0 estimates (the phi_2, phi_3 terms of DPM-Solver's
    third-order multistep, Lu et al. 2022); returns D on the last step (to sigma = 0)."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    model = Model(denoiser, x, callback)
    history: list[tuple[torch.Tensor, float]] = []  # (D, h) of the previous steps, newest first
    for i in range(len(sig) - 1):
        denoised = model(x, sig[i])
        if sig[i + 1] == 0:
            x, h = denoised, math.nan
        else:
            h = dpm_lambda(sig[i + 1]) - dpm_lambda(sig[i])
            h_eta = h * (1 + eta)
            x = _sde_first_order(x, denoised, h, eta)
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if len(history) >= 2:
                (d_1, h_1), (d_2, h_2) = history[0], history[1]
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif history:
                x = x + phi_2 * (denoised - history[0][0]) / (history[0][1] / h)
            x = add_noise(x, _sde_noise_std(sig[i + 1], h, eta) * s_noise, generator)
        history = [(denoised, h), *history][:2]
        model.report(i, x, sig[i], sig[i + 1], denoised)
    return x
