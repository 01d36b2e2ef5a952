"""Every sampler diffusers also has, against diffusers' scheduler loop (the pinned test oracle):
the same tiny random eps U-Net, the same initial noise, the same timesteps, max relative
difference 1e-4.

Stochastic samplers get the same noise by construction, patching nothing: both sides draw one
N(0, I) tensor of the batch's shape per step from a torch.Generator seeded alike, in the same
order (diffusers' randn_tensor with one generator is torch.randn(shape, generator=g)).
"""

import math

import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                       KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler, LCMScheduler,
                       LMSDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)

from genpix.diffusion import samplers
from genpix.diffusion.denoiser import DiscreteDenoiser, DiscreteEpsDenoiser
from genpix.diffusion.schedules import append_zero
from genpix.models.unet import UNet, UNetConfig

# diffusers' schedulers call numpy on tensors (numpy 2 deprecation warnings, thousands per run)
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
              pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")]
STEPS = 10  # linspace(0, 999, 10) are whole timesteps, so no scheduler needs to round them


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(image_size=8, channels=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                           attention_levels=(1,), head_channels=8, norm_groups=4)).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)  # the zero init would make every test trivial
    return lambda x, t, **cond: unet(x, torch.as_tensor(t).float().reshape(-1).expand(x.shape[0]), **cond)


def close(ours, expected, rtol=1e-4):
    err = ((ours - expected).abs().max() / expected.abs().max()).item()
    assert err < rtol, f"max relative difference {err:.2e}"


def noise():
    return torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))


def seeded(seed):
    return None if seed is None else torch.Generator().manual_seed(seed)


@torch.no_grad()
def diffusers_loop(scheduler, net, x, seed=None, **step_kwargs):
    """diffusers' denoising loop: scale the input, predict eps, step."""
    generator = seeded(seed)
    extra = {} if generator is None else {"generator": generator}
    for t in scheduler.timesteps:
        x = scheduler.step(net(scheduler.scale_model_input(x, t), t), t, x, **step_kwargs, **extra).prev_sample
    return x


# k-diffusion-style schedulers: x in the sigma form; their sigmas are our "uniform" schedule.
SIGMA_FORM = [
    ("Euler", EulerDiscreteScheduler, {}, None, {}),
    ("Euler a", EulerAncestralDiscreteScheduler, {}, 3, {}),
    ("Heun", HeunDiscreteScheduler, {}, None, {}),
    ("DPM2", KDPM2DiscreteScheduler, {}, None, {}),
    ("DPM2 a", KDPM2AncestralDiscreteScheduler, {}, 4, {}),
    ("LMS", LMSDiscreteScheduler, {}, None, {}),
]


@pytest.mark.parametrize("name, cls, config, seed, options", SIGMA_FORM, ids=[c[0] for c in SIGMA_FORM])
def test_sigma_form_samplers_equal_diffusers(net, name, cls, config, seed, options):
    """Same noise for Euler a and DPM2 a: one generator seeded alike on both sides."""
    scheduler = cls(num_train_timesteps=1000, timestep_spacing="linspace", **config)
    scheduler.set_timesteps(STEPS)
    den = DiscreteEpsDenoiser(net, scheduler.alphas_cumprod)
    sigmas = den.sigmas(STEPS, "uniform")
    # Heun and DPM2 list each inner sigma twice (their two stages); the steps are the same
    torch.testing.assert_close(sigmas, torch.unique_consecutive(scheduler.sigmas.float()), rtol=1e-5, atol=0)
    x = noise() * scheduler.init_noise_sigma
    expected = diffusers_loop(scheduler, net, x.clone(), seed)
    close(samplers.get(name)(den, x, sigmas, generator=seeded(seed), **options), expected)


# Variance-preserving schedulers: x_T = noise, which is noise sqrt(sigma_T^2 + 1) in the sigma form;
# at sigma = 0 both forms agree. Their sigmas (k-style, from their own timesteps) are passed as is.
VP_FORM = [
    ("DPM++ 2M", DPMSolverMultistepScheduler, {}, None, {}),
    ("DPM++ 2M SDE", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}, 5, {}),
    ("DPM++ 2M SDE Heun", DPMSolverMultistepScheduler,
     {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}, 5, {}),
    ("UniPC", UniPCMultistepScheduler, {"solver_type": "bh2", "solver_order": 2}, None,
     {"variant": "bh2", "order": 2}),
    ("UniPC", UniPCMultistepScheduler, {"solver_type": "bh2", "solver_order": 3}, None,
     {"variant": "bh2", "order": 3}),
    ("UniPC", UniPCMultistepScheduler, {"solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"},
     None, {"variant": "bh1", "order": 3}),
    ("UniPC", UniPCMultistepScheduler, {"solver_type": "bh2", "solver_order": 1}, None,
     {"variant": "bh2", "order": 1}),
]


@pytest.mark.parametrize("name, cls, config, seed, options", VP_FORM,
                         ids=["2M", "2M-SDE", "2M-SDE-Heun", "UniPC-bh2-2", "UniPC-bh2-3", "UniPC-bh1-3", "UniPC-1"])
def test_multistep_samplers_equal_diffusers(net, name, cls, config, seed, options):
    """DPM-Solver++ and UniPC. diffusers' bh1 with a final sigma of 0 returns NaN (B(h) = h is
    infinite there), so bh1 is compared on its final_sigmas_type="sigma_min" grid, ending at
    sigma_min; ours then ends at sigma_min too and is rescaled to the VP form."""
    scheduler = cls(num_train_timesteps=1000, **config)
    scheduler.set_timesteps(STEPS)
    den = DiscreteEpsDenoiser(net, scheduler.alphas_cumprod)
    sigmas = scheduler.sigmas.float()
    torch.testing.assert_close(sigmas[:-1], den.sigmas_at(scheduler.timesteps)[:-1], rtol=1e-5, atol=0)
    expected = diffusers_loop(scheduler, net, noise(), seed)
    ours = samplers.get(name)(den, noise() * (sigmas[0] ** 2 + 1) ** 0.5, sigmas, generator=seeded(seed), **options)
    close(ours / (sigmas[-1] ** 2 + 1) ** 0.5, expected)


def test_plms_equals_diffusers_pndm(net):
    """PNDM with skip_prk_steps (Stable Diffusion's PLMS) visits t_(n-1), t_(n-2), t_(n-2), ...,
    t_0: the repeated entry is the second evaluation of the first (pseudo improved Euler) step.
    set_alpha_to_one makes its last step end at sigma = 0. Its timesteps are our "ddim" schedule."""
    scheduler = PNDMScheduler(num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=True, steps_offset=1)
    scheduler.set_timesteps(STEPS)
    den = DiscreteEpsDenoiser(net, scheduler.alphas_cumprod)
    sigmas = den.sigmas(STEPS, "DDIM")
    torch.testing.assert_close(sigmas, den.sigmas_at(torch.unique_consecutive(scheduler.timesteps)))
    expected = diffusers_loop(scheduler, net, noise())
    close(samplers.get("PLMS")(den, noise() * (sigmas[0] ** 2 + 1) ** 0.5, sigmas), expected)


def test_ddim_with_eta_equals_diffusers_with_the_same_noise(net):
    """DDIM's eta > 0 noise: one generator on both sides (diffusers also draws on the last step,
    where the std is 0, after every draw that matters)."""
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    scheduler.set_timesteps(STEPS)
    den = DiscreteEpsDenoiser(net, scheduler.alphas_cumprod)
    sigmas = den.sigmas(STEPS, "ddim")
    torch.testing.assert_close(sigmas, den.sigmas_at(scheduler.timesteps))
    expected = diffusers_loop(scheduler, net, noise(), 7, eta=0.5)
    close(samplers.get("DDIM")(den, noise() * (sigmas[0] ** 2 + 1) ** 0.5, sigmas,
                               generator=seeded(7), eta=0.5), expected)


def test_lcm_equals_diffusers_lcm(net):
    """LCM's re-noising draws match; diffusers' LCMScheduler also applies the consistency boundary
    condition c_skip(t) = 0.25 / ((10 t)^2 + 0.25), at most 7e-6 for its timesteps (t >= 19), which
    our sampler leaves to the model (docs/samplers.md): well inside the tolerance."""
    scheduler = LCMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(4)
    den = DiscreteEpsDenoiser(net, scheduler.alphas_cumprod)
    sigmas = den.sigmas_at(scheduler.timesteps)
    expected = diffusers_loop(scheduler, net, noise(), 6)
    close(samplers.get("LCM")(den, noise() * (sigmas[0] ** 2 + 1) ** 0.5, sigmas, generator=seeded(6)), expected)


@pytest.mark.parametrize("name", ["DPM++ 2S a", "DPM++ SDE"])
def test_dpmpp_2s_and_sde_at_eta_0_equal_diffusers_singlestep(net, name):
    """diffusers has no DPM++ 2S a, and its DPMSolverSDEScheduler needs torchsde (not installable
    here: it depends on torch). With eta = 0 both are DPM-Solver++(2S) with r = 1/2 (Lu et al.
    2022, Algorithm 1), which is diffusers' singlestep second-order solver when every other grid
    point is the lambda-midpoint of its neighbours: we hand that scheduler this grid (its sigmas
    and timesteps) after set_timesteps, and the last step (Euler to 0) is its final first-order
    step. Their noise is checked for its distribution in test_samplers.py."""
    scheduler = DPMSolverSinglestepScheduler(num_train_timesteps=1000, solver_order=2)
    den = DiscreteEpsDenoiser(net, scheduler.alphas_cumprod)
    sigmas = den.sigmas(6, "karras")
    s = sigmas[:-1].tolist()
    grid = [v for a, b in zip(s[:-1], s[1:]) for v in (a, math.sqrt(a * b))] + [s[-1]]
    scheduler.set_timesteps(len(grid))
    assert scheduler.order_list == [1, 2] * 5 + [1]
    scheduler.sigmas = torch.tensor([*grid, 0.0])
    scheduler.timesteps = den.sigma_to_t(torch.tensor(grid))
    expected = diffusers_loop(scheduler, net, noise())
    close(samplers.get(name)(den, noise() * (sigmas[0] ** 2 + 1) ** 0.5, sigmas, eta=0.0), expected)


@pytest.mark.parametrize("schedule, config", [
    ("uniform", {}), ("karras", {"use_karras_sigmas": True}), ("exponential", {"use_exponential_sigmas": True}),
    ("beta", {"use_beta_sigmas": True})])
@pytest.mark.parametrize("steps", [4, 10, 28])
def test_schedules_equal_diffusers_sigmas(schedule, config, steps):
    """At step counts whose linspace(0, 999, n) timesteps are whole: between training timesteps
    diffusers interpolates sigma linearly, k-diffusion and we in log sigma (relative difference
    up to ~1e-4), and for 1 step diffusers' linspace starts at t = 0 (docs/samplers.md)."""
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                       beta_start=0.00085, beta_end=0.012, timestep_spacing="linspace", **config)
    scheduler.set_timesteps(steps)
    den = DiscreteDenoiser(lambda x, t: x, scheduler.alphas_cumprod)
    torch.testing.assert_close(den.sigmas(steps, schedule), scheduler.sigmas.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("schedule, spacing, offset", [("leading", "leading", 0), ("trailing", "trailing", 0),
                                                       ("ddim", "leading", 1)])
def test_timestep_spacings_equal_diffusers(schedule, spacing, offset):
    scheduler = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=offset)
    scheduler.set_timesteps(7)
    den = DiscreteDenoiser(lambda x, t: x, scheduler.alphas_cumprod)
    torch.testing.assert_close(den.sigmas(7, schedule), append_zero(den.table[scheduler.timesteps]))
