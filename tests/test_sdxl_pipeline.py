"""SDXL through genpix.load_pipeline (pipelines/sdxl.py on the generation core) against diffusers'
StableDiffusionXLPipeline and StableDiffusionXLImg2ImgPipeline, on the tiny fixtures (tests/sdxl_fixtures.py):
the same call as for SD 1.x, a diffusers folder and an SGM single file with ``tokenizer=``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler
from sdxl_fixtures import SDXL_SCHEDULER, saved_models

import genpix
from genpix.io.images import parse_infotext

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]
PROMPT, NEGATIVE = "a photo of an astronaut riding a horse on the moon", "a painting, blurry"
WIDTH, HEIGHT, STEPS, CFG, SEED = 48, 32, 4, 5.0, 3
SCHEDULERS = {"DDIM": (DDIMScheduler, {}), "Euler": (EulerDiscreteScheduler, {"timestep_spacing": "linspace"})}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return saved_models(tmp_path_factory)


def assert_same_images(out, expected: np.ndarray) -> None:
    error = float(np.abs(out.tensors.permute(0, 2, 3, 1).numpy() - expected).max())
    assert error < 3 / 255, f"max |genpix - diffusers| = {error:.2e}"
    assert expected.std() > 0.01


@pytest.mark.parametrize("layout, sampler", [("folder", "DDIM"), ("folder", "Euler"), ("single file", "Euler")])
def test_load_pipeline_makes_diffusers_images(models, layout, sampler):
    ref, folder, path = models("base")
    pipe = genpix.load_pipeline(str(folder)) if layout == "folder" else \
        genpix.load_pipeline(str(path), tokenizer=str(folder / "tokenizer"))
    # the U-Net's sample size x the VAE's factor 2: the folder's 16; a single file's is SDXL's 128 (1024 at factor 8)
    assert pipe.family == "sdxl" and pipe.default_size == (32 if layout == "folder" else 256)
    assert pipe.prediction == "eps"
    latents = torch.randn(1, 4, HEIGHT // 2, WIDTH // 2, generator=torch.Generator().manual_seed(11))
    cls, extra = SCHEDULERS[sampler]
    ref.scheduler = cls.from_config(SDXL_SCHEDULER, **extra)
    expected = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, width=WIDTH,
                   height=HEIGHT, latents=latents, output_type="np").images
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler=sampler, cfg_scale=CFG, seed=SEED,
               width=WIDTH, height=HEIGHT, latents=latents)
    assert_same_images(out, expected)
    fields = parse_infotext(out.infotexts[0])
    assert (fields["Size"], fields["Negative prompt"]) == (f"{WIDTH}x{HEIGHT}", NEGATIVE)
    assert "Family" not in fields  # as sd-webui, which writes none for SD or SDXL


def test_refiner_img2img_through_load_pipeline(models):
    ref, folder, path = models("refiner")
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(2)),
                                            size=(HEIGHT, WIDTH), mode="bilinear")
    ref.scheduler = DDIMScheduler.from_config(SDXL_SCHEDULER)
    expected = ref(PROMPT, image=image.permute(0, 2, 3, 1).numpy(), strength=0.5, negative_prompt=NEGATIVE,
                   num_inference_steps=STEPS, guidance_scale=CFG, output_type="np",
                   generator=torch.Generator().manual_seed(SEED)).images
    for pipe in (genpix.load_pipeline(str(folder)),
                 genpix.load_pipeline(str(path), tokenizer_2=str(folder / "tokenizer_2"))):
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM", cfg_scale=CFG, seed=SEED,
                   init_images=image, strength=0.5)
        assert_same_images(out, expected)


@pytest.mark.parametrize("sampler, strength", [("Euler", 1.0), ("DDIM", 0.75)])
def test_9_channel_inpainting_model_makes_diffusers_inpaint_images(models, sampler, strength):
    """SDXL's 9-channel inpainting U-Net (latents, mask, masked-image latents) against
    StableDiffusionXLInpaintPipeline: the left half repainted, from pure noise and from the noised image."""
    from diffusers import StableDiffusionXLInpaintPipeline

    ref, folder, _ = models("inpaint")
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(2)),
                                            size=(HEIGHT, WIDTH), mode="bilinear")
    mask = torch.zeros(1, 1, HEIGHT, WIDTH)
    mask[..., :, : WIDTH // 2] = 0.8  # >= 0.5 after binarising
    cls, extra = SCHEDULERS[sampler]
    inpaint = StableDiffusionXLInpaintPipeline(**{k: v for k, v in ref.components.items()}, add_watermarker=False)
    inpaint.scheduler = cls.from_config(SDXL_SCHEDULER, **extra)
    expected = inpaint(PROMPT, image=image.permute(0, 2, 3, 1).numpy(), mask_image=mask, strength=strength,
                       negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=HEIGHT,
                       width=WIDTH, output_type="np", generator=torch.Generator().manual_seed(SEED)).images
    pipe = genpix.load_pipeline(str(folder))
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler=sampler, cfg_scale=CFG, seed=SEED,
               init_images=image, mask=mask, strength=strength)
    assert_same_images(out, expected)


def test_micro_conditioning_settings_change_the_image(models):
    """sd-webui's crop setting reaches the U-Net: a crop of (16, 0) makes another picture."""
    from genpix.pipelines.sdxl_conditioning import MicroConditioning

    _, folder, _ = models("base")
    pipe = genpix.load_pipeline(str(folder))
    settings = dict(prompt=PROMPT, steps=2, sampler="Euler", seed=SEED, width=WIDTH, height=HEIGHT)
    plain = pipe(**settings).tensors
    pipe.micro = MicroConditioning(crop_top_left=(16, 0))
    cropped = pipe(**settings).tensors
    assert (cropped - plain).abs().max() > 1e-3
    pipe.micro = MicroConditioning()
    torch.testing.assert_close(pipe(**settings).tensors, plain)
