"""Parameterisations, schedules, guidance, losses and the sampler registry, on closed-form models."""

import math

import pytest
import torch

from genpix.diffusion import samplers, schedules
from genpix.diffusion.denoiser import (CFGDenoiser, ContinuousCosineDenoiser, DiscreteDenoiser,
                                       training_target)
from genpix.diffusion.losses import diffusion_loss, min_snr_weight
from genpix.errors import GenpixError

AC = schedules.alphas_cumprod(schedules.betas("linear", 1000))


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_a_perfect_network_of_each_parameterisation_recovers_x0(prediction):
    """A network that outputs its exact training target makes D(x, sigma) = x0 at every sigma."""
    x0, eps = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    den = DiscreteDenoiser(None, AC, prediction)
    sigma = den.t_to_sigma(torch.tensor([0.0, 10.0, 500.0, 999.0]))
    alpha, sigma_vp = (1 / (1 + sigma**2)).sqrt(), (sigma**2 / (1 + sigma**2)).sqrt()
    shape = (4, 1, 1, 1)
    target = training_target(prediction, x0, eps, alpha.view(shape), sigma_vp.view(shape))

    def oracle(x_t, t):  # the network sees x_t = alpha x0 + sigma_vp eps and the training timestep
        torch.testing.assert_close(x_t, alpha.view(shape) * x0 + sigma_vp.view(shape) * eps)
        torch.testing.assert_close(t, torch.tensor([0.0, 10.0, 500.0, 999.0]), atol=1e-3, rtol=0)
        return target

    den.network = oracle
    torch.testing.assert_close(den(x0 + sigma.view(shape) * eps, sigma), x0, atol=2e-4, rtol=1e-4)


def test_sigma_to_t_inverts_t_to_sigma_by_log_interpolation():
    den = DiscreteDenoiser(None, AC)
    t = torch.tensor([0.0, 0.25, 17.5, 998.9, 999.0])
    torch.testing.assert_close(den.sigma_to_t(den.t_to_sigma(t)), t, atol=1e-3, rtol=0)
    assert den.sigma_to_t(den.table[[0, 123, 999]]).tolist() == [0.0, 123.0, 999.0]  # exact at table points


def test_the_seed_cosine_schedule_keeps_unit_variance_and_its_rate_range():
    noise, signal = schedules.signal_cosine(torch.linspace(0, 1, 11))
    torch.testing.assert_close(noise**2 + signal**2, torch.ones(11))
    assert signal[0].item() == pytest.approx(0.95, rel=1e-5) and signal[-1].item() == pytest.approx(0.02, rel=1e-5)
    den = ContinuousCosineDenoiser(None)
    sigmas = den.sigmas(5)
    assert len(sigmas) == 6 and sigmas[-1] == 0 and sigmas[0].item() == pytest.approx(math.sqrt(1 - 0.02**2) / 0.02, rel=1e-5)
    torch.testing.assert_close(den.sigma_to_t(sigmas[:-1]), torch.tensor([1000.0, 800, 600, 400, 200]), atol=1e-2, rtol=0)


@pytest.mark.parametrize("schedule", schedules.SIGMA_SCHEDULES)
def test_every_sigma_schedule_has_steps_plus_one_descending_values_ending_in_zero(schedule):
    den = DiscreteDenoiser(None, AC)
    sigmas = den.sigmas(7, schedule)
    assert len(sigmas) == 8 and sigmas[-1] == 0 and bool((sigmas[:-1] > sigmas[1:]).all())
    assert sigmas[0] <= den.sigma_max * (1 + 1e-6) and sigmas[-2] >= den.sigma_min * (1 - 1e-6)


def test_bad_names_and_step_counts_are_one_line_errors_listing_the_choices():
    den = DiscreteDenoiser(None, AC)
    with pytest.raises(GenpixError, match="unknown schedule type 'cosine'; choose one of: Automatic, Uniform, Karras"):
        den.sigmas(10, "cosine")
    with pytest.raises(GenpixError, match="unknown beta schedule 'sigmoid'; choose one of: linear, scaled_linear, cosine"):
        schedules.betas("sigmoid")
    with pytest.raises(GenpixError, match="unknown sampler 'Heun 3'; choose one of: DPM\\+\\+ 2M, DPM\\+\\+ SDE"):
        samplers.get("Heun 3")
    with pytest.raises(GenpixError, match="unknown parameterisation 'score'; choose one of: eps, v, x0"):
        DiscreteDenoiser(None, AC, "score")
    with pytest.raises(GenpixError, match="steps must be between 1 and 1000, got 1001"):
        den.sigmas(1001)
    with pytest.raises(GenpixError, match="between 1 and the model's 100 timesteps, got 101"):
        DiscreteDenoiser(None, AC[::10]).sigmas(101, "DDIM")
    with pytest.raises(GenpixError, match="steps must be between 1 and 1000, got 0"):
        den.sigmas(0, "karras")


def test_guidance_batches_uncond_and_cond_in_one_call():
    calls = []

    def network(x_t, t, class_labels):
        calls.append(class_labels.tolist())
        return class_labels.float().view(-1, 1, 1, 1).expand_as(x_t)

    den = DiscreteDenoiser(network, AC, "x0")
    labels = torch.tensor([3, 5])
    cfg = CFGDenoiser(den, {"class_labels": labels}, {"class_labels": torch.tensor([10, 10])}, 2.5)
    out = cfg(torch.zeros(2, 1, 2, 2), torch.tensor(1.0))
    assert calls == [[10, 10, 3, 5]]  # one batch: [uncond, cond]
    torch.testing.assert_close(out[:, 0, 0, 0], 10 + 2.5 * (labels.float() - 10))


def test_min_snr_weights_and_losses():
    snr = torch.tensor([0.5, 5.0, 50.0])
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "eps"), torch.tensor([1.0, 1.0, 0.1]))
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "x0"), torch.tensor([0.5, 5.0, 5.0]))
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "v"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
    a, b = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), -2.0)
    assert diffusion_loss(a, b, "mse").item() == 4.0 and diffusion_loss(a, b, "mae").item() == 2.0
    assert diffusion_loss(a, b, "mae", torch.tensor([1.0, 0.0])).item() == 1.0
    with pytest.raises(GenpixError, match="choose one of: mse, mae"):
        diffusion_loss(a, b, "huber")


@pytest.mark.parametrize("name", [n for n in samplers.names() if n != "DPM adaptive"])  # batch-wide steps
def test_samplers_are_batch_independent_with_per_image_generators(name):
    """Image i depends only on its own generator, never on its batch neighbours."""
    den = DiscreteDenoiser(lambda x, t: 0.5 * x, AC)
    sigmas = den.sigmas(6)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    three = samplers.get(name)(den, x, sigmas, generator=gens([7, 8, 9]))
    one = samplers.get(name)(den, x[1:2], sigmas, generator=gens([8]))
    torch.testing.assert_close(three[1:2], one)
    seen = []
    samplers.get(name)(den, x, sigmas, generator=gens([7, 8, 9]), callback=lambda d: seen.append(d["i"]))
    assert seen == list(range(6))


def test_ddim_on_a_gaussian_converges_to_the_exact_ode_solution():
    """For data ~ N(0, s_d^2) the ideal denoiser is x s_d^2 / (s_d^2 + sigma^2) and the
    probability-flow ODE maps x(sigma_max) to x s_d / sqrt(s_d^2 + sigma_max^2); deterministic DDIM
    is Euler's method on it, so its error is small and halves when the steps double."""
    s_d, sigma_max = 0.5, 80.0
    den = lambda x, sigma: x * s_d**2 / (s_d**2 + sigma**2)  # noqa: E731
    exact = sigma_max * s_d / math.sqrt(s_d**2 + sigma_max**2)
    errors = [abs(samplers.get("DDIM")(den, torch.full((1, 1, 1, 1), sigma_max),
                                        schedules.sigmas_karras(n, 0.002, sigma_max)).item() - exact)
              for n in (100, 200)]
    assert errors[1] < 0.02 * exact and 0.4 < errors[1] / errors[0] < 0.6


def test_clipped_denoiser_keeps_x0_in_the_data_range():
    from genpix.diffusion.denoiser import ClippedDenoiser

    x = torch.linspace(-3, 3, 24).view(1, 1, 4, 6)
    clipped = ClippedDenoiser(lambda x, sigma, **cond: x * cond["scale"])
    out = clipped(x, torch.tensor(1.0), scale=2.0)
    assert out.min() == -1 and out.max() == 1
    inside = (x * 2).abs() <= 1
    assert torch.equal(out[inside], (x * 2)[inside])  # values in range pass unchanged
