"""A whole SDXL generation with genpix's own parts against diffusers' StableDiffusionXLPipeline (base,
txt2img) and StableDiffusionXLImg2ImgPipeline (refiner, img2img), on the tiny random fixtures
(tests/sdxl_fixtures.py) loaded by genpix from the diffusers folder (and the base from its SGM single file).

The generation is written here from the parts: the SDXL conditioner (pipelines/sdxl_conditioning.py),
genpix.diffusion.denoiser's DiscreteDenoiser and CFGDenoiser around the SDXL U-Net, a sampler of
genpix.diffusion.samplers over the sigmas of the scheduler diffusers is configured with, and the
autoencoder's decode of x0 / 0.13025. 48x32 images (non-square), a non-empty negative prompt, CFG 5,
4 steps, the same start noise: images within 3/255 (measured: 1.7e-6 to 2.8e-6, float32 rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from sdxl_fixtures import SDXL_SCHEDULER, saved_models

from genpix.diffusion import samplers
from genpix.diffusion.denoiser import CFGDenoiser, DiscreteDenoiser
from genpix.io.sd_loader import load_sd_components
from genpix.pipelines.sdxl_conditioning import SDXLConditioner

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]
PROMPT, NEGATIVE = "a photo of an astronaut riding a horse on the moon", "a painting, blurry"
WIDTH, HEIGHT, STEPS, CFG, SEED = 48, 32, 4, 5.0, 3
TOLERANCE = 3 / 255
SCHEDULERS = {  # sd-webui sampler -> (diffusers scheduler, its options, genpix schedule, sigma form?)
    "DDIM": (DDIMScheduler, {}, "ddim", False),  # leading spacing, steps_offset 1 (SDXL's config)
    "Euler": (EulerDiscreteScheduler, {"timestep_spacing": "linspace"}, "uniform", True),
    # trailing spacing (whole timesteps 999, 749, 499, 249; diffusers rounds its linspace and Karras ones)
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"timestep_spacing": "trailing"}, "trailing", False),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return saved_models(tmp_path_factory)


def scheduler(sampler: str):
    cls, extra, _, _ = SCHEDULERS[sampler]
    return cls.from_config(SDXL_SCHEDULER, **extra)


@torch.no_grad()
def genpix_images(parts, sampler: str, noise: torch.Tensor, init: torch.Tensor | None = None,
                  strength: float = 1.0) -> np.ndarray:
    """txt2img from ``noise`` (or img2img from ``init`` in [0, 1]: posterior sample, then noise, from
    one generator in diffusers' order) with genpix's parts; images (B, H, W, 3) in [0, 1]."""
    conditioner = SDXLConditioner(parts.tokenizer, parts.text_model, parts.tokenizer_2, parts.text_model_2,
                                  refiner=parts.refiner).with_size(WIDTH, HEIGHT)
    cond, uncond, _ = conditioner.encode_pair(PROMPT, NEGATIVE)
    denoiser = DiscreteDenoiser(parts.unet, parts.alphas_cumprod, parts.prediction)
    _, _, schedule, sigma_form = SCHEDULERS[sampler]
    sigmas = denoiser.sigmas(STEPS, schedule)
    if sampler == "DDIM":  # SD's set_alpha_to_one False: the last step ends at alphas_cumprod[0]
        sigmas = torch.cat([sigmas[:-1], denoiser.table[:1]])
    scale = parts.vae.config.scaling_factor
    if init is None:
        x = noise * (sigmas[0] if sigma_form else (sigmas[0] ** 2 + 1) ** 0.5)
    else:
        g = torch.Generator().manual_seed(SEED)
        z0 = parts.vae.encode(init * 2 - 1).sample(g) * scale
        sigmas = sigmas[STEPS - int(strength * STEPS):]
        x = z0 + torch.randn(z0.shape, generator=g) * sigmas[0]  # x_t = z0 + sigma eps (sigma form)
    guided = CFGDenoiser(denoiser, cond, uncond, CFG)
    x0 = samplers.get(sampler)(guided, x, sigmas, generator=torch.Generator().manual_seed(SEED))
    x0 = x0 / (sigmas[-1] ** 2 + 1) ** 0.5  # the VP form (DDIM's last sigma is not 0)
    images = (parts.vae.decode(x0 / scale) / 2 + 0.5).clamp(0, 1)
    return images.permute(0, 2, 3, 1).numpy()


def assert_close_images(ours: np.ndarray, expected: np.ndarray) -> None:
    error = float(np.abs(ours - expected).max())
    assert error < TOLERANCE, f"max |genpix - diffusers| = {error:.2e}"
    assert expected.std() > 0.01  # the images are not trivially flat


@pytest.mark.parametrize("sampler", list(SCHEDULERS))
def test_base_txt2img_equals_diffusers(models, sampler):
    ref, folder, _ = models("base")
    latents = torch.randn(1, 4, HEIGHT // 2, WIDTH // 2, generator=torch.Generator().manual_seed(11))
    ref.scheduler = scheduler(sampler)
    expected = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, width=WIDTH,
                   height=HEIGHT, latents=latents, output_type="np").images
    assert_close_images(genpix_images(load_sd_components(folder), sampler, latents), expected)


def test_base_from_its_sgm_single_file_makes_the_same_image(models):
    ref, folder, path = models("base")
    latents = torch.randn(1, 4, HEIGHT // 2, WIDTH // 2, generator=torch.Generator().manual_seed(12))
    ref.scheduler = scheduler("Euler")
    expected = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, width=WIDTH,
                   height=HEIGHT, latents=latents, output_type="np").images
    parts = load_sd_components(path, tokenizer=folder / "tokenizer")
    assert_close_images(genpix_images(parts, "Euler", latents), expected)


@pytest.mark.parametrize("sampler", list(SCHEDULERS))
def test_refiner_img2img_equals_diffusers(models, sampler):
    """The refiner (bigG alone, aesthetic scores 6 and 2.5) on an image at strength 0.5."""
    ref, folder, _ = models("refiner")
    image = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(2))
    image = torch.nn.functional.interpolate(image, size=(HEIGHT, WIDTH), mode="bilinear")  # smooth, in [0, 1]
    ref.scheduler = scheduler(sampler)
    expected = ref(PROMPT, image=image.permute(0, 2, 3, 1).numpy(), strength=0.5, negative_prompt=NEGATIVE,
                   num_inference_steps=STEPS, guidance_scale=CFG, output_type="np",
                   generator=torch.Generator().manual_seed(SEED)).images
    parts = load_sd_components(folder)
    assert parts.refiner
    assert_close_images(genpix_images(parts, sampler, None, init=image, strength=0.5), expected)
