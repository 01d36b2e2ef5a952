"""DPM-Solver with fixed and adaptive step sizes (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver
for Diffusion Probabilistic Model Sampling in Around 10 Steps"), as k-diffusion writes them
(crowsonkb/k-diffusion, sampling.py ``DPMSolver``, ``sample_dpm_fast``, ``sample_dpm_adaptive``):
sd-webui's "DPM fast" and "DPM adaptive".

Both step in t = lambda = -log sigma on the noise prediction eps = (x - D(x, sigma)) / sigma, with
the solvers' first-, second- and third-order updates (Lu et al. 2022, Algorithms 1 and 2, eq. 3.6-3.8).
They ignore the schedule's inner sigmas: the solver runs from sigmas[0] to the smallest positive
sigma (where sd-webui's img2img starts and ends them; its txt2img uses the model's whole sigma
range) and stops there, at a small noise level, without a last step to 0 (as k-diffusion does).
With ``eta`` > 0 each step lands on sigma_down and adds noise of std sigma_up (sd-webui passes its
``eta_ancestral``, 1 by default, hence the default here).

DPM adaptive picks its step sizes from an error estimate over the whole batch (x.numel()), so
unlike the other samplers its images depend on the batch they are sampled in, as in k-diffusion.
"""

from __future__ import annotations

import math

import torch

from genpix.diffusion.sampler_steps import (Callback, GeneratorArg, Model, add_noise, ancestral_step,
                                            check_eta, check_inputs, check_range)
from genpix.errors import GenpixError


def _sigma(t: float) -> float:
    return math.exp(-t)


class Evaluations:
    """The denoiser, keeping each evaluation's x0 estimate until the step is reported."""

    def __init__(self, model: Model) -> None:
        self.model, self.denoised = model, []

    def eps(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """eps = (x - D(x, sigma)) / sigma at time t."""
        denoised = self.model(x, _sigma(t))
        self.denoised.append(denoised)
        return (x - denoised) / _sigma(t)


def _step_1(x: torch.Tensor, t: float, t_next: float, eps: torch.Tensor) -> torch.Tensor:
    """DPM-Solver-1 (eq. 3.7, = DDIM): x - sigma_next (e^h - 1) eps."""
    return x - _sigma(t_next) * math.expm1(t_next - t) * eps


def _step_2(model: Evaluations, x: torch.Tensor, t: float, t_next: float, eps: torch.Tensor,
            r1: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-Solver-2 (Algorithm 1) with its intermediate point at t + r1 h; also returns eps there."""
    h = t_next - t
    s1 = t + r1 * h
    eps_r1 = model.eps(x - _sigma(s1) * math.expm1(r1 * h) * eps, s1)
    x_2 = x - _sigma(t_next) * math.expm1(h) * eps - _sigma(t_next) / (2 * r1) * math.expm1(h) * (eps_r1 - eps)
    return x_2, eps_r1


def _step_3(model: Evaluations, x: torch.Tensor, t: float, t_next: float, eps: torch.Tensor,
            eps_r1: torch.Tensor | None = None, r1: float = 1 / 3, r2: float = 2 / 3) -> torch.Tensor:
    """DPM-Solver-3 (Algorithm 2); ``eps_r1`` from a DPM-Solver-2 step with the same r1 is reused."""
    h = t_next - t
    s1, s2 = t + r1 * h, t + r2 * h
    if eps_r1 is None:
        eps_r1 = model.eps(x - _sigma(s1) * math.expm1(r1 * h) * eps, s1)
    u2 = (x - _sigma(s2) * math.expm1(r2 * h) * eps
          - _sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps))
    eps_r2 = model.eps(u2, s2)
    return x - _sigma(t_next) * math.expm1(h) * eps - _sigma(t_next) / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps)


def _ancestral_target(t: float, t_next: float, t_end: float, eta: float) -> tuple[float, float]:
    """(t the deterministic step lands on, std of the noise added after it) for a step t -> t_next:
    sigma_down of :func:`ancestral_step`, no lower than sigma_min (t_end)."""
    if not eta:
        return t_next, 0.0
    sigma_down = ancestral_step(_sigma(t), _sigma(t_next), eta)[0]
    t_down = min(t_end, -math.log(sigma_down))
    return t_down, math.sqrt(max(_sigma(t_next) ** 2 - _sigma(t_down) ** 2, 0.0))


def solver_range(sigmas: list[float]) -> tuple[float, float]:
    """(t_start, t_end) = (-log sigmas[0], -log of the smallest positive sigma)."""
    positive = [s for s in sigmas if s > 0]
    if len(positive) < 2 or positive[0] <= positive[-1]:
        raise GenpixError("DPM fast and DPM adaptive need at least 2 steps (two descending positive sigmas)")
    return -math.log(positive[0]), -math.log(positive[-1])


@torch.no_grad()
def sample_dpm_fast(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                    callback: Callback = None, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-Fast (Lu et al. 2022, sec. 3.4; k-diffusion sample_dpm_fast): n = len(sigmas) - 1
    model evaluations over floor(n / 3) + 1 equal steps in t, third order but for the last one or two."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    t_start, t_end = solver_range(sig)
    nfe = len(sig) - 1
    m = nfe // 3 + 1
    ts = torch.linspace(t_start, t_end, m + 1, dtype=torch.float64).tolist()
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    model = Model(denoiser, x, callback)
    evaluations = Evaluations(model)
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_down, sigma_up = _ancestral_target(t, t_next, t_end, eta)
        eps = evaluations.eps(x, t)
        if order == 1:
            x_next = _step_1(x, t, t_down, eps)
        elif order == 2:
            x_next = _step_2(evaluations, x, t, t_down, eps)[0]
        else:
            x_next = _step_3(evaluations, x, t, t_down, eps)
        x = add_noise(x_next, sigma_up * s_noise, generator)
        # one report per model evaluation (i = 0 .. n - 1, as the steps of the others), each with the new x
        for j, denoised in enumerate(evaluations.denoised):
            model.report(sum(orders[:i]) + j, x, _sigma(t), _sigma(t_next), denoised)
        evaluations.denoised.clear()
    return x


class PIDStepSizeController:
    """k-diffusion's PID controller of the step size h (Soderlind 2003 in its form): the factor
    from the last three inverse errors, softened by 1 + atan(factor - 1); accepted when >= the safety."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float, eps: float = 1e-8) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps = accept_safety, eps
        self.errs: list[float] = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                        callback: Callback = None, order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                        h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                        accept_safety: float = 0.81, eta: float = 1.0, s_noise: float = 1.0,
                        max_evaluations: int = 10_000) -> torch.Tensor:
    """DPM-Solver-12 / -23 with adaptive steps (Lu et al. 2022, sec. 3.4 and appendix C; k-diffusion
    sample_dpm_adaptive): each step takes a lower- and a higher-order solution, the scaled
    difference is the error, and a PID controller accepts the step and resizes h. The number of
    model evaluations follows from rtol/atol, not from the number of sigmas."""
    sig = check_inputs(x, sigmas)
    check_eta(eta, s_noise)
    if order not in (2, 3):
        raise GenpixError(f"order must be 2 or 3, got {order}")
    check_range("rtol", rtol, 0.0, math.inf)
    check_range("atol", atol, 0.0, math.inf)
    check_range("h_init", h_init, 1e-6, math.inf)
    s, t_end = solver_range(sig)
    model = Model(denoiser, x, callback)
    solver = Evaluations(model)
    x_prev, evaluations, accepted = x, 0, 0
    pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    while s < t_end - 1e-5:
        if evaluations >= max_evaluations:
            raise GenpixError(f"DPM adaptive did not finish within {max_evaluations} model evaluations "
                              f"(raise rtol/atol)")
        t = min(t_end, s + pid.h)
        t_down, sigma_up = _ancestral_target(s, t, t_end, eta)
        eps = solver.eps(x, s)
        if order == 2:
            x_low = _step_1(x, s, t_down, eps)
            x_high = _step_2(solver, x, s, t_down, eps)[0]
        else:
            x_low, eps_r1 = _step_2(solver, x, s, t_down, eps, r1=1 / 3)
            x_high = _step_3(solver, x, s, t_down, eps, eps_r1)
        denoised = solver.denoised[0]
        solver.denoised.clear()
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        evaluations += order
        if pid.propose_step(error):
            x_prev = x_low
            x = add_noise(x_high, sigma_up * s_noise, generator)
            model.report(accepted, x, _sigma(s), _sigma(t), denoised)
            s, accepted = t, accepted + 1
    return x
