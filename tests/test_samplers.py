"""The sampler suite's properties: schedules, name resolution, reproducibility, the noise of the
stochastic samplers, convergence of the deterministic ones, option ranges, and guidance."""

import math

import pytest
import torch

from genpix.diffusion import samplers, schedules
from genpix.diffusion.denoiser import (CFGDenoiser, ContinuousCosineDenoiser, DiscreteDenoiser,
                                       DiscreteEpsDenoiser, DiscreteVDenoiser, guidance_cutoff_sigma)
from genpix.errors import GenpixError
from genpix.models.unet import UNet, UNetConfig

AC = schedules.alphas_cumprod(schedules.betas("scaled_linear", 1000, 0.00085, 0.012))
ALL_SCHEDULES = tuple(schedules.SCHEDULE_LABELS)  # keys, "automatic" included
STOCHASTIC = ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
              "DPM++ 3M SDE", "DDPM", "LCM"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(image_size=8, channels=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                           attention_levels=(1,), head_channels=8, norm_groups=4)).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
    return lambda x, t, **cond: unet(x, t.float().reshape(-1).expand(x.shape[0]), **cond)


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ALL_SCHEDULES)
@pytest.mark.parametrize("steps", [1, 2, 7, 50, 1000])
@pytest.mark.parametrize("denoiser", [DiscreteDenoiser(None, AC), ContinuousCosineDenoiser(None)],
                         ids=["discrete", "continuous"])
def test_every_schedule_gives_steps_plus_one_descending_sigmas_ending_in_zero(denoiser, steps, schedule):
    sigmas = denoiser.sigmas(steps, schedule)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float32 and sigmas[-1] == 0
    assert bool((sigmas[:-1] > sigmas[1:]).all()), sigmas
    assert sigmas[0] <= denoiser.sigma_max * (1 + 1e-5) and sigmas[-2] >= denoiser.sigma_min * (1 - 1e-5)


def test_schedule_types_take_sd_webui_labels_and_keys_in_any_case():
    den = DiscreteDenoiser(None, AC)
    for key, label in schedules.SCHEDULE_LABELS.items():
        for spelling in (key, label, label.upper(), label.lower()):
            assert schedules.schedule_key(spelling) == key
    torch.testing.assert_close(den.sigmas(9, "SGM Uniform"), den.sigmas(9, "sgm_uniform"))
    assert not torch.equal(den.sigmas(9, "sgm_uniform"), den.sigmas(9, "uniform"))
    torch.testing.assert_close(den.sigmas(9, "Normal"), den.sigmas(9, "Uniform"))  # as in sd-webui, for T steps
    with pytest.raises(GenpixError, match="unknown schedule type 'cosine'; choose one of: Automatic, Uniform, "
                                          "Karras, Exponential, SGM Uniform, Simple, Normal, DDIM, Beta"):
        den.sigmas(9, "cosine")


def test_simple_and_ddim_schedules_pick_training_timesteps_as_sd_webui():
    den = DiscreteDenoiser(None, AC)
    torch.testing.assert_close(den.sigmas(4, "simple"), schedules.append_zero(den.table[[999, 749, 499, 249]]))
    # CompVis DDIM: range(0, 1000, 1000 // n) + 1, i.e. diffusers' leading spacing with steps_offset 1
    torch.testing.assert_close(den.sigmas(4, "ddim"), schedules.append_zero(den.table[[751, 501, 251, 1]]))
    torch.testing.assert_close(den.sigmas(3, "sgm_uniform"), schedules.append_zero(den.table[[999, 666, 333]]))


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, schedule, expected", [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "karras")),
    ("DPM++ SDE Karras", "Automatic", ("DPM++ SDE", "karras")),
    ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "exponential")),
    ("dpm++ 2m sde heun karras", None, ("DPM++ 2M SDE Heun", "karras")),
    ("LMS Karras", None, ("LMS", "karras")),
    ("DPM2 a Karras", None, ("DPM2 a", "karras")),
    ("Euler a", None, ("Euler a", "uniform")),
    ("k_euler_a", "automatic", ("Euler a", "uniform")),
    ("DPM++ 2M", "Automatic", ("DPM++ 2M", "karras")),
    ("DPM++ 2M", "Beta", ("DPM++ 2M", "beta")),
    ("DPM++ 3M SDE", None, ("DPM++ 3M SDE", "exponential")),
    ("DDIM", None, ("DDIM", "ddim")),
    ("PLMS", "SGM Uniform", ("PLMS", "sgm_uniform")),
    ("UniPC", None, ("UniPC", "uniform")),
    ("Euler a Karras", None, ("Euler a", "karras")),
])
def test_names_resolve_to_a_sampler_and_a_schedule(name, schedule, expected):
    entry, key = samplers.resolve(name, schedule)
    assert (entry.name, key) == expected


def test_every_registered_name_and_alias_resolves_to_itself_with_its_default_schedule():
    for entry in samplers.SAMPLER_INFO.values():
        for spelling in (entry.name, entry.name.upper(), *entry.aliases):
            assert samplers.resolve(spelling) == (entry, entry.default_schedule)
    assert set(samplers.names()) >= {"Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "LMS", "DPM++ 2M", "DPM++ 2S a",
                                     "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "DDIM", "PLMS", "UniPC", "DDPM",
                                     "LCM"}


def test_bad_names_are_errors_that_list_the_choices_never_a_substitute():
    with pytest.raises(GenpixError, match=r"unknown sampler 'Euler b'; choose one of: DPM\+\+ 2M, .*, LCM, DDPM"):
        samplers.resolve("Euler b")
    with pytest.raises(GenpixError, match="unknown schedule type 'Cosine'; choose one of: Automatic"):
        samplers.resolve("Euler", "Cosine")
    with pytest.raises(GenpixError, match="names the karras schedule but schedule 'Exponential' was given"):
        samplers.resolve("DPM++ 2M Karras", "Exponential")
    with pytest.raises(GenpixError, match="unknown sampler 'Karras'"):
        samplers.resolve("Karras")


# --- reproducibility -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in samplers.names() if n != "DPM adaptive"])  # batch-wide steps
def test_same_seed_same_image_and_batch_size_never_changes_an_image(net, name):
    """Image i draws its noise from its own generator: alone or in a batch of 4, run twice, the
    same picture (to float rounding of the batched network)."""
    den = DiscreteEpsDenoiser(net, AC)
    sigmas = den.sigmas(5, samplers.resolve(name)[1])
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * (sigmas[0] ** 2 + 1) ** 0.5

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    four = samplers.get(name)(den, x, sigmas, generator=gens([10, 11, 12, 13]))
    again = samplers.get(name)(den, x, sigmas, generator=gens([10, 11, 12, 13]))
    one = samplers.get(name)(den, x[2:3], sigmas, generator=gens([12]))
    assert torch.equal(four, again)
    torch.testing.assert_close(four[2:3], one, rtol=1e-5, atol=1e-5)
    if name in STOCHASTIC:  # and the noise matters
        other = samplers.get(name)(den, x[2:3], sigmas, generator=gens([99]))
        assert (other - one).abs().max() > 1e-3


# --- Gaussian data: the ideal denoiser in closed form ---------------------------------------------

S_D, SIGMA_MAX = 0.5, 80.0


def gaussian_denoiser(x, sigma):
    """E[x0 | x] for x0 ~ N(0, S_D^2) and x = x0 + sigma eps."""
    return x * S_D**2 / (S_D**2 + sigma**2)


@pytest.mark.parametrize("name, options", [
    ("Euler a", {}), ("DPM2 a", {}), ("DPM++ 2S a", {}), ("DPM++ SDE", {}), ("DPM++ 2M SDE", {}),
    ("DPM++ 2M SDE Heun", {}), ("DPM++ 3M SDE", {}), ("DDPM", {}), ("DDIM", {"eta": 1.0}),
    ("Heun", {"s_churn": 40.0}), ("DPM2", {"s_churn": 40.0})])
def test_stochastic_samplers_draw_the_data_distribution(name, options):
    """Distribution comparison (DPM++ SDE, 2S a and the churn have no diffusers counterpart that
    runs here): from x ~ N(0, S_D^2 + sigma_max^2), 300 Karras steps with the exact denoiser
    must end at N(0, S_D^2); 20000 draws give the std to about 0.5%. With s_noise = 0 (ancestral
    steps that drop their noise) the spread collapses, so the test sees the noise."""
    sigmas = schedules.sigmas_karras(300, 0.002, SIGMA_MAX)
    x = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(0)) * math.hypot(S_D, SIGMA_MAX)
    out = samplers.get(name)(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(1), **options)
    assert abs(out.std().item() / S_D - 1) < 0.03 and abs(out.mean().item()) < 0.02
    if "eta" in samplers.get(name).options and "s_noise" in samplers.get(name).options:
        collapsed = samplers.get(name)(gaussian_denoiser, x, sigmas, s_noise=0.0)
        assert collapsed.std().item() < 0.8 * S_D


@pytest.mark.parametrize("name, options, order", [
    ("Euler", {}, 1), ("DDIM", {}, 1), ("Heun", {}, 2), ("DPM2", {}, 2), ("LMS", {}, 2), ("DPM++ 2M", {}, 2),
    ("PLMS", {}, 2), ("UniPC", {}, 3), ("UniPC", {"variant": "bh2"}, 3), ("DPM++ 2S a", {"eta": 0.0}, 2),
    ("DPM++ SDE", {"eta": 0.0}, 2), ("DPM++ 2M SDE", {"eta": 0.0}, 2), ("DPM++ 3M SDE", {"eta": 0.0}, 3),
    ("DPM2 a", {"eta": 0.0}, 2)])
def test_deterministic_samplers_converge_to_the_exact_ode_solution_at_their_order(name, options, order):
    """The probability-flow ODE maps x(sigma_max) to x S_D / sqrt(S_D^2 + sigma_max^2) for Gaussian
    data; doubling the steps from 20 to 40 must cut the error by about 2^order."""
    x = torch.linspace(-3, 3, 7).view(7, 1, 1, 1) * math.hypot(S_D, SIGMA_MAX)
    exact = x * S_D / math.hypot(S_D, SIGMA_MAX)
    errors = [((samplers.get(name)(gaussian_denoiser, x, schedules.sigmas_karras(n, 0.002, SIGMA_MAX), **options)
                - exact).abs().max() / exact.abs().max()).item() for n in (20, 40)]
    assert errors[1] < 0.08 and math.log2(errors[0] / errors[1]) > order - 0.5, errors


# --- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options, message", [
    ("Euler a", {"eta": 1.5}, "eta must be between 0.0 and 1.0, got 1.5"),
    ("DDIM", {"eta": -0.1}, "eta must be between 0.0 and 1.0, got -0.1"),
    ("Euler", {"s_churn": -1.0}, "s_churn must be between 0.0 and 100.0, got -1.0"),
    ("DPM++ 2M SDE", {"s_noise": 3.0}, "s_noise must be between 0.0 and 2.0, got 3.0"),
    ("Heun", {"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmax must be between 2.0 and inf, got 1.0"),
    ("LMS", {"order": 5}, "order must be between 1 and 4, got 5"),
    ("UniPC", {"variant": "bh3"}, "unknown UniPC variant 'bh3'; choose one of: bh1, bh2"),
])
def test_options_outside_their_range_are_one_line_errors(name, options, message):
    x, sigmas = torch.zeros(1, 1, 2, 2), torch.tensor([1.0, 0.0])
    with pytest.raises(GenpixError, match=message.replace("(", r"\(").replace(")", r"\)")):
        samplers.get(name)(gaussian_denoiser, x, sigmas, **options)


def test_the_whole_loop_checks_steps_and_refuses_options_a_sampler_does_not_take():
    den = DiscreteDenoiser(lambda x, t: torch.zeros_like(x), AC)
    noise = torch.randn(1, 1, 2, 2)
    with pytest.raises(GenpixError, match="sampler 'Euler' takes no eta; it takes: s_churn, s_tmin, s_tmax, s_noise"):
        samplers.sample(den, noise, 4, "Euler", eta=0.5)
    with pytest.raises(GenpixError, match="steps must be between 1 and 1000, got 1001"):
        samplers.sample(den, noise, 1001, "DPM++ 2M Karras")
    out = samplers.sample(den, noise, 3, "DPM++ 2M Karras", schedule=None)
    assert out.shape == (1, 1, 2, 2)


# --- guidance -------------------------------------------------------------------------------------


def shifted(net):
    """A conditional network: the U-Net's output scaled and shifted per image by the 'condition'."""
    return lambda x, t, shift: net(x, t) * (1 + shift.view(-1, 1, 1, 1)) + shift.view(-1, 1, 1, 1)


def test_a_negative_condition_takes_the_unconditional_place(net):
    """uncond is what the guidance pushes away from: a null or a negative condition, one batch."""
    seen = []

    def network(x, t, shift):
        seen.append(shift.tolist())
        return shifted(net)(x, t, shift)

    den = DiscreteEpsDenoiser(network, AC)
    x, sigma = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor(3.0)
    cond, negative = {"shift": torch.tensor([0.5, 0.5])}, {"shift": torch.tensor([-1.0, -2.0])}
    out = CFGDenoiser(den, cond, negative, 4.0)(x, sigma)
    assert seen[-1] == [-1.0, -2.0, 0.5, 0.5]  # [negative, cond] in one call
    d_neg, d_cond = den(x, sigma, **negative), den(x, sigma, **cond)
    torch.testing.assert_close(out, d_neg + 4.0 * (d_cond - d_neg))


@pytest.mark.parametrize("cls", [DiscreteEpsDenoiser, DiscreteVDenoiser])
def test_guidance_rescale_equals_diffusers_rescale_noise_cfg(net, cls):
    """Lin et al. (2023) eq. 15-16 on the network's own output (eps or v), as diffusers' pipelines do."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    den = cls(shifted(net), AC)
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 5
    sigma = torch.tensor(4.0)
    cond, uncond = {"shift": torch.tensor([0.3, -0.2])}, {"shift": torch.tensor([0.0, 0.0])}
    out = CFGDenoiser(den, cond, uncond, 7.5, guidance_rescale=0.7)(x, sigma)
    t = den.sigma_to_t(sigma.expand(2))
    x_t = x / (sigma**2 + 1) ** 0.5
    f_cond, f_uncond = shifted(net)(x_t, t, **cond), shifted(net)(x_t, t, **uncond)
    f = rescale_noise_cfg(f_uncond + 7.5 * (f_cond - f_uncond), f_cond, guidance_rescale=0.7)
    c_skip, c_out, _ = den.get_scalings(sigma)
    torch.testing.assert_close(out, c_skip * x + c_out * f, rtol=1e-5, atol=1e-5)
    plain = CFGDenoiser(den, cond, uncond, 7.5)(x, sigma)
    assert (plain - out).abs().max() > 1e-3


def test_guidance_cut_off_runs_only_the_conditional_pass_after_the_fraction(net):
    batches = []

    def network(x, t, shift):
        batches.append(x.shape[0])
        return shifted(net)(x, t, shift)

    den = DiscreteEpsDenoiser(network, AC)
    sigmas = den.sigmas(10, "karras")
    cfg = CFGDenoiser(den, {"shift": torch.ones(2)}, {"shift": torch.zeros(2)}, 5.0,
                      cutoff_sigma=guidance_cutoff_sigma(sigmas, 0.6))
    x = torch.randn(2, 2, 8, 8) * sigmas[0]
    samplers.get("Euler")(cfg, x, sigmas)
    assert batches == [4] * 6 + [2] * 4
    batches.clear()
    samplers.get("Euler")(CFGDenoiser(den, {"shift": torch.ones(2)}, {"shift": torch.zeros(2)}, 5.0,
                                      cutoff_sigma=guidance_cutoff_sigma(sigmas, 1.0)), x, sigmas)
    assert batches == [4] * 10
    with pytest.raises(GenpixError, match="guidance_rescale must be between 0 and 1, got 1.5"):
        CFGDenoiser(den, {}, {}, 5.0, guidance_rescale=1.5)
    with pytest.raises(GenpixError, match="cut-off fraction must be between 0 and 1, got 2"):
        guidance_cutoff_sigma(sigmas, 2)
