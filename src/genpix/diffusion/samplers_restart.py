"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes"), as
sd-webui writes it (modules/sd_samplers_extra.py ``restart_sampler``): Heun steps of the ODE, and
a few times a jump back up to a higher noise level by adding fresh noise, followed by Heun steps
down again, which contracts the errors the ODE steps accumulated (their Algorithm 1).

sd-webui's automatic restart list: with 20 or more steps the main schedule becomes Karras with
``steps - restart_steps * restart_times`` sigmas between the given sigma_max and smallest positive
sigma, and at the sigma nearest 0.1 the sampler restarts up to the sigma nearest 2, ``restart_times``
times, over ``restart_steps`` Karras steps (9 steps once; from 36 steps on, steps // 4 twice).
Below 20 steps it is plain Heun on the given sigmas.
"""

from __future__ import annotations

import torch

from genpix.diffusion import schedules
from genpix.diffusion.sampler_steps import Callback, GeneratorArg, Model, add_noise, check_inputs, check_range, to_d


def _nearest(sigmas: list[float], value: float) -> int:
    """Index of the sigma closest to ``value`` (the first on ties, as torch.argmin)."""
    return min(range(len(sigmas)), key=lambda i: abs(sigmas[i] - value))


def restart_plan(sigmas: list[float]) -> list[tuple[float, float]]:
    """The (sigma, sigma_next) steps of sd-webui's automatic restart list for these sigmas."""
    steps = len(sigmas) - 1
    restarts: dict[float, tuple[int, int, float]] = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = schedules.sigmas_karras(steps - restart_steps * restart_times, sigmas[-2], sigmas[0]).tolist()
        restarts = {0.1: (restart_steps + 1, restart_times, 2.0)}
    by_index = {_nearest(sigmas, key): value for key, value in restarts.items()}
    plan = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            restart_steps, restart_times, restart_max = by_index[i + 1]
            min_idx, max_idx = i + 1, _nearest(sigmas, restart_max)
            if max_idx < min_idx:
                ladder = schedules.sigmas_karras(restart_steps, sigmas[min_idx], sigmas[max_idx]).tolist()[:-1]
                plan += list(zip(ladder[:-1], ladder[1:])) * restart_times
    return plan


@torch.no_grad()
def sample_restart(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: GeneratorArg = None,
                   callback: Callback = None, s_noise: float = 1.0) -> torch.Tensor:
    """Restart (sd-webui "Restart"): Heun steps along :func:`restart_plan`; where a step starts
    above where the last one ended, noise of std sqrt(sigma^2 - sigma_last^2) s_noise first
    (Xu et al. 2023, Algorithm 1, the restart forward process)."""
    sig = check_inputs(x, sigmas)
    check_range("s_noise", s_noise, 0.0, 2.0)
    model = Model(denoiser, x, callback)
    last = None
    for i, (sigma, sigma_next) in enumerate(restart_plan(sig)):
        if last is not None and last < sigma:
            x = add_noise(x, (sigma**2 - last**2) ** 0.5 * s_noise, generator)
        denoised = model(x, sigma)
        d = to_d(x, sigma, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma)
        else:  # Heun's method (Karras et al. 2022, Algorithm 1)
            x_2 = x + d * (sigma_next - sigma)
            x = x + (d + to_d(x_2, sigma_next, model(x_2, sigma_next))) / 2 * (sigma_next - sigma)
        model.report(i, x, sigma, sigma_next, denoised)
        last = sigma_next
    return x
