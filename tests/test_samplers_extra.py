"""DPM fast, DPM adaptive and Restart against their published algorithms, written here from the
sources (k-diffusion sampling.py: DPMSolver, PIDStepSizeController, sample_dpm_fast,
sample_dpm_adaptive, get_sigmas_karras, get_ancestral_step; sd-webui sd_samplers_extra.py:
restart_sampler), with k-diffusion's tqdm and callbacks left out."""

import math

import pytest
import torch

from genpix.diffusion import samplers, schedules
from genpix.errors import GenpixError


# --- k-diffusion -----------------------------------------------------------------------------------
def append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


class PIDStepSizeController:
    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs = []

    def limiter(self, x):
        return 1 + math.atan(x - 1)

    def propose_step(self, error):
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = self.limiter(factor)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class DPMSolver:
    def __init__(self, model):
        self.model = model

    def t(self, sigma):
        return -sigma.log()

    def sigma(self, t):
        return t.neg().exp()

    def eps(self, eps_cache, key, x, t):
        if key in eps_cache:
            return eps_cache[key], eps_cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma)) / self.sigma(t)
        return eps, {key: eps, **eps_cache}

    def dpm_solver_1_step(self, x, t, t_next, eps_cache=None):
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, 'eps', x, t)
        x_1 = x - self.sigma(t_next) * h.expm1() * eps
        return x_1, eps_cache

    def dpm_solver_2_step(self, x, t, t_next, r1=1 / 2, eps_cache=None):
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, 'eps', x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, 'eps_r1', u1, s1)
        x_2 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, eps_cache

    def dpm_solver_3_step(self, x, t, t_next, r1=1 / 3, r2=2 / 3, eps_cache=None):
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, 'eps', x, t)
        s1 = t + r1 * h
        s2 = t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, 'eps_r1', u1, s1)
        u2 = x - self.sigma(s2) * (r2 * h).expm1() * eps - self.sigma(s2) * (r2 / r1) * (
            (r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2, eps_cache = self.eps(eps_cache, 'eps_r2', u2, s2)
        x_3 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, eps_cache

    def dpm_solver_fast(self, x, t_start, t_end, nfe, eta=0., s_noise=1., noise_sampler=None):
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        if nfe % 3 == 0:
            orders = [3] * (m - 2) + [2, 1]
        else:
            orders = [3] * (m - 1) + [nfe % 3]
        for i in range(len(orders)):
            eps_cache = {}
            t, t_next = ts[i], ts[i + 1]
            if eta:
                sd, su = get_ancestral_step(self.sigma(t), self.sigma(t_next), eta)
                t_next_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5
            else:
                t_next_, su = t_next, 0.
            eps, eps_cache = self.eps(eps_cache, 'eps', x, t)
            if orders[i] == 1:
                x, eps_cache = self.dpm_solver_1_step(x, t, t_next_, eps_cache=eps_cache)
            elif orders[i] == 2:
                x, eps_cache = self.dpm_solver_2_step(x, t, t_next_, eps_cache=eps_cache)
            else:
                x, eps_cache = self.dpm_solver_3_step(x, t, t_next_, eps_cache=eps_cache)
            x = x + su * s_noise * noise_sampler(self.sigma(t), self.sigma(t_next))
        return x

    def dpm_solver_adaptive(self, x, t_start, t_end, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.,
                            icoeff=1., dcoeff=0., accept_safety=0.81, eta=0., s_noise=1., noise_sampler=None):
        forward = t_end > t_start
        h_init = abs(h_init) * (1 if forward else -1)
        atol = torch.tensor(atol)
        rtol = torch.tensor(rtol)
        s = t_start
        x_prev = x
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        info = {'steps': 0, 'nfe': 0, 'n_accept': 0, 'n_reject': 0}
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            eps_cache = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            if eta:
                sd, su = get_ancestral_step(self.sigma(s), self.sigma(t), eta)
                t_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t) ** 2 - self.sigma(t_) ** 2) ** 0.5
            else:
                t_, su = t, 0.
            eps, eps_cache = self.eps(eps_cache, 'eps', x, s)
            if order == 2:
                x_low, eps_cache = self.dpm_solver_1_step(x, s, t_, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_2_step(x, s, t_, eps_cache=eps_cache)
            else:
                x_low, eps_cache = self.dpm_solver_2_step(x, s, t_, r1=1 / 3, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_3_step(x, s, t_, eps_cache=eps_cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            accept = pid.propose_step(error)
            if accept:
                x_prev = x_low
                x = x_high + su * s_noise * noise_sampler(self.sigma(s), self.sigma(t))
                s = t
                info['n_accept'] += 1
            else:
                info['n_reject'] += 1
            info['nfe'] += order
            info['steps'] += 1
        return x, info


def sample_dpm_fast(model, x, sigma_min, sigma_max, n, eta=0., noise_sampler=None):
    dpm_solver = DPMSolver(model)
    return dpm_solver.dpm_solver_fast(x, dpm_solver.t(torch.tensor(sigma_max)), dpm_solver.t(torch.tensor(sigma_min)),
                                      n, eta, 1.0, noise_sampler)


def sample_dpm_adaptive(model, x, sigma_min, sigma_max, order=3, eta=0., noise_sampler=None):
    dpm_solver = DPMSolver(model)
    return dpm_solver.dpm_solver_adaptive(x, dpm_solver.t(torch.tensor(sigma_max)),
                                          dpm_solver.t(torch.tensor(sigma_min)), order, eta=eta,
                                          noise_sampler=noise_sampler)


# --- sd-webui modules/sd_samplers_extra.py ------------------------------------------------------------
def restart_sampler(model, x, sigmas, s_noise=1., restart_list=None, randn_like=torch.randn_like):
    s_in = x.new_ones([x.shape[0]])
    step_id = 0

    def heun_step(x, old_sigma, new_sigma, second_order=True):
        nonlocal step_id
        denoised = model(x, old_sigma * s_in)
        d = to_d(x, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0 or not second_order:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, new_sigma * s_in)
            d_2 = to_d(x_2, new_sigma, denoised_2)
            d_prime = (d + d_2) / 2
            x = x + d_prime * dt
        step_id += 1
        return x

    steps = sigmas.shape[0] - 1
    if restart_list is None:
        if steps >= 20:
            restart_steps = 9
            restart_times = 1
            if steps >= 36:
                restart_steps = steps // 4
                restart_times = 2
            sigmas = get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
        else:
            restart_list = {}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = get_sigmas_karras(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                while restart_times > 0:
                    restart_times -= 1
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:]))
    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + randn_like(x) * s_noise * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        x = heun_step(x, old_sigma, new_sigma)
        last_sigma = new_sigma
    return x
# ------------------------------------------------------------------------------------------------------


def toy_denoiser(x, sigma):
    """A smooth nonlinear x0 estimate, sigma a scalar or (B,) tensor."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return 0.8 * torch.tanh(x / (1 + sigma**2) ** 0.5) + 0.05 * x.roll(1, -1) / (1 + sigma)


def start(n=2, seed=0):
    sigmas = schedules.sigmas_karras(12, 0.03, 14.6)
    return torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * sigmas[0], sigmas


def noise_source(seed):
    g = torch.Generator().manual_seed(seed)
    return g, lambda *args: torch.randn((2, 3, 4, 4), generator=g)


@pytest.mark.parametrize("steps", [2, 3, 5, 6, 7, 10])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_fast_equals_k_diffusion(steps, eta):
    x, _ = start()
    sigmas = schedules.sigmas_karras(steps, 0.03, 14.6)
    _, ref_noise = noise_source(5)
    expected = sample_dpm_fast(toy_denoiser, x, sigmas[-2].item(), sigmas[0].item(), steps, eta, ref_noise)
    seen = []
    ours = samplers.get("DPM fast")(toy_denoiser, x, sigmas, eta=eta, generator=noise_source(5)[0],
                                    callback=lambda d: seen.append(d["i"]))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    assert seen == list(range(steps))  # one report per model evaluation


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_adaptive_equals_k_diffusion(order, eta):
    x, sigmas = start()
    _, ref_noise = noise_source(6)
    expected, info = sample_dpm_adaptive(toy_denoiser, x, sigmas[-2].item(), sigmas[0].item(), order, eta, ref_noise)
    calls = []
    counted = lambda x, sigma: calls.append(1) or toy_denoiser(x, sigma)  # noqa: E731
    ours = samplers.get("DPM adaptive")(counted, x, sigmas, order=order, eta=eta, generator=noise_source(6)[0])
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    assert len(calls) == info["nfe"] and info["n_accept"] > 3


@pytest.mark.parametrize("steps", [8, 20, 25, 40])
def test_restart_equals_sd_webui(steps):
    x, _ = start(seed=1)
    sigmas = schedules.sigmas_karras(steps, 0.03, 14.6)
    g = torch.Generator().manual_seed(7)
    expected = restart_sampler(toy_denoiser, x, sigmas, randn_like=lambda t: torch.randn(t.shape, generator=g))
    ours = samplers.get("Restart")(toy_denoiser, x, sigmas, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_restart_adds_noise_only_with_20_steps_or_more():
    x, _ = start()
    sigmas = schedules.sigmas_karras(10, 0.03, 14.6)
    heun = samplers.get("Heun")(toy_denoiser, x, sigmas)
    assert torch.allclose(samplers.get("Restart")(toy_denoiser, x, sigmas), heun, atol=1e-6)
    sigmas = schedules.sigmas_karras(20, 0.03, 14.6)
    a, b = (samplers.get("Restart")(toy_denoiser, x, sigmas, generator=torch.Generator().manual_seed(s))
            for s in (1, 2))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["DPM fast", "DPM adaptive"])
def test_gaussian_data_lands_near_the_exact_ode_solution(name):
    """For x0 ~ N(0, s^2) the ideal denoiser is x s^2 / (s^2 + sigma^2); with eta 0 the solvers
    follow the probability-flow ODE to x s / sqrt(s^2 + sigma^2) at their last sigma."""
    s_d, sigma_max = 0.5, 80.0
    den = lambda x, sigma: x * s_d**2 / (s_d**2 + torch.as_tensor(sigma) ** 2)  # noqa: E731
    sigmas = schedules.sigmas_karras(30, 0.002, sigma_max)
    x = torch.full((1, 1, 1, 1), sigma_max)
    options = {"eta": 0.0}
    if name == "DPM adaptive":  # its default tolerances (rtol 5%) leave errors of that size
        options.update(rtol=1e-3, atol=1e-4)
    out = samplers.get(name)(den, x, sigmas, **options).item()
    exact = sigma_max * math.sqrt(s_d**2 + 0.002**2) / math.sqrt(s_d**2 + sigma_max**2)
    assert abs(out - exact) < 0.01 * exact


def test_restart_draws_the_gaussian_data_distribution():
    """With its restarts (25 steps), from x ~ N(0, s^2 + sigma_max^2) and the exact denoiser the
    samples have the data's std s (the restart noise keeps the marginals right)."""
    s_d, sigma_max = 0.5, 80.0
    den = lambda x, sigma: x * s_d**2 / (s_d**2 + torch.as_tensor(sigma) ** 2)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 50, 80, generator=g) * math.sqrt(s_d**2 + sigma_max**2)
    out = samplers.get("Restart")(den, x, schedules.sigmas_karras(25, 0.002, sigma_max), generator=g)
    assert abs(out.std().item() - s_d) < 0.03


def test_registered_under_sd_webui_names_with_options_checked():
    assert samplers.resolve("k_dpm_fast")[0].name == "DPM fast"
    assert samplers.resolve("k_dpm_ad")[0].name == "DPM adaptive"
    assert samplers.resolve("restart") == (samplers.SAMPLER_INFO["Restart"], "karras")
    with pytest.raises(GenpixError, match="order must be 2 or 3"):
        samplers.get("DPM adaptive")(toy_denoiser, *reversed(start()[::-1]), order=4)
    with pytest.raises(GenpixError, match="at least 2 steps"):
        samplers.get("DPM fast")(toy_denoiser, torch.zeros(1, 1, 2, 2), torch.tensor([1.0, 0.0]))


def test_dpm_adaptive_steps_follow_the_whole_batch():
    """As in k-diffusion, one error estimate over the batch sets the steps, so an image sampled
    with others differs from the same image alone (the one sampler where it does)."""
    x, sigmas = start()
    both = samplers.get("DPM adaptive")(toy_denoiser, x, sigmas, eta=0.0)
    alone = samplers.get("DPM adaptive")(toy_denoiser, x[:1], sigmas, eta=0.0)
    expected, _ = sample_dpm_adaptive(toy_denoiser, x[:1], sigmas[-2].item(), sigmas[0].item(),
                                      noise_sampler=lambda *args: torch.zeros(1, 3, 4, 4))
    torch.testing.assert_close(alone, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(both[:1], alone, atol=1e-6)
