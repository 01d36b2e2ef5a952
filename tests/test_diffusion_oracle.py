"""Schedules and samplers against diffusers (the pinned test oracle), same weights and noise."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from genpix.diffusion import samplers, schedules
from genpix.diffusion.denoiser import DiscreteDenoiser, DiscreteEpsDenoiser, DiscreteVDenoiser
from genpix.models.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(image_size=8, channels=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                           attention_levels=(1,), head_channels=8, norm_groups=4)).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)  # the zero init would make every test trivial
    return lambda x, t, **cond: unet(x, t.float().reshape(-1).expand(x.shape[0]), **cond)


def close(a, b, rtol=1e-5):
    err = (a - b).abs().max() / b.abs().max()
    assert err < rtol, f"relative error {err:.2e}"


@pytest.mark.parametrize("kind, diffusers_name, start, end", [
    ("linear", "linear", 1e-4, 0.02), ("scaled_linear", "scaled_linear", 0.00085, 0.012),
    ("cosine", "squaredcos_cap_v2", 1e-4, 0.02)])
def test_betas_equal_diffusers(kind, diffusers_name, start, end):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=diffusers_name, beta_start=start, beta_end=end)
    ours = schedules.betas(kind, 1000, start, end)
    torch.testing.assert_close(ours, ref.betas, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(schedules.alphas_cumprod(ours), ref.alphas_cumprod, rtol=1e-5, atol=1e-9)


def ddim_like_loop(scheduler, net, noise, steps, **step_kwargs):
    scheduler.set_timesteps(steps)
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t), t, x, **step_kwargs).prev_sample
    return x, scheduler.timesteps


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_eta0_equals_diffusers_ddim(net, prediction):
    """diffusers' DDIMScheduler (leading spacing, set_alpha_to_one) visits t = 900, 800, ..., 0 with
    x_t in variance-preserving form; ours walks the same timesteps' sigmas from
    x = x_T sqrt(sigma_T^2 + 1) to sigma = 0."""
    ref = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True,
                        prediction_type=prediction)
    noise = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    expected, timesteps = ddim_like_loop(ref, net, noise, 10, eta=0.0)
    cls = DiscreteEpsDenoiser if prediction == "epsilon" else DiscreteVDenoiser
    den = cls(net, ref.alphas_cumprod)
    sigmas = den.sigmas(10, schedule="leading")
    torch.testing.assert_close(sigmas, den.sigmas_at(timesteps))
    assert len(sigmas) == 11 and sigmas[-1] == 0
    ours = samplers.get("DDIM")(den, noise * (sigmas[0] ** 2 + 1) ** 0.5, sigmas)
    close(ours, expected)


def test_ddpm_ancestral_equals_diffusers_ddpm_with_the_same_noise(net):
    """Algorithm 2 with the posterior variance beta~ (diffusers' fixed_small) over strided steps;
    both draw their step noise from one generator in the same order (none on the last step)."""
    ref = DDPMScheduler(num_train_timesteps=1000, clip_sample=False, variance_type="fixed_small")
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    expected, _ = ddim_like_loop(ref, net, noise, 8, generator=torch.Generator().manual_seed(3))
    den = DiscreteEpsDenoiser(net, ref.alphas_cumprod)
    sigmas = den.sigmas(8, schedule="leading")
    ours = samplers.get("DDPM")(den, noise * (sigmas[0] ** 2 + 1) ** 0.5, sigmas,
                                generator=torch.Generator().manual_seed(3))
    close(ours, expected)
    # ... and the noise matters: another generator gives another image
    other = samplers.get("DDPM")(den, noise * (sigmas[0] ** 2 + 1) ** 0.5, sigmas,
                                 generator=torch.Generator().manual_seed(4))
    assert (other - ours).abs().max() > 1e-2


def test_euler_equals_diffusers_euler(net):
    """k-diffusion's uniform spacing is diffusers' linspace: t = 999, 888, ..., 0 for 10 steps."""
    ref = EulerDiscreteScheduler(num_train_timesteps=1000, timestep_spacing="linspace")
    ref.set_timesteps(10)
    den = DiscreteEpsDenoiser(net, ref.alphas_cumprod)
    sigmas = den.sigmas(10)
    torch.testing.assert_close(sigmas, ref.sigmas, rtol=1e-5, atol=0)
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(5)) * ref.init_noise_sigma
    expected = x.clone()
    for t in ref.timesteps:
        expected = ref.step(net(ref.scale_model_input(expected, t), t), t, expected).prev_sample
    close(samplers.get("Euler")(den, x, sigmas), expected)


def test_karras_sigmas_equal_diffusers():
    ref = EulerDiscreteScheduler(num_train_timesteps=1000, use_karras_sigmas=True)
    ref.set_timesteps(12)
    den = DiscreteDenoiser(lambda x, t: x, ref.alphas_cumprod)
    torch.testing.assert_close(den.sigmas(12, "karras"), ref.sigmas, rtol=1e-5, atol=0)
