"""SDXL's refiner taking over the last steps (pipelines/refiner.py), as sd-webui's refiner switch: equal to
running the base and the refiner by hand over the two parts of the sigmas; the refiner alone; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sdxl_fixtures import saved_models

import genpix
from genpix.diffusion import samplers
from genpix.errors import GenpixError
from genpix.io.images import parse_infotext
from genpix.pipelines import modes
from genpix.pipelines.capabilities import bind
from genpix.pipelines.refiner import switch_step
from genpix.pipelines.request import GenerationRequest

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]
PROMPT, NEGATIVE = "a photo of an astronaut riding a horse on the moon", "a painting, blurry"
WIDTH, HEIGHT, STEPS, CFG = 48, 32, 6, 5.0


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    models = saved_models(tmp_path_factory)
    return genpix.load_pipeline(str(models("base")[1])), genpix.load_pipeline(str(models("refiner")[1]))


def test_switch_step_is_sd_webuis():
    assert switch_step(20, 0.8) == 17 and switch_step(10, 0.5) == 6 and switch_step(4, 1.0) == 4


def test_refiner_switch_equals_the_two_models_by_hand(pipes):
    base, refiner = pipes
    latents = torch.randn(1, 4, HEIGHT // 2, WIDTH // 2, generator=torch.Generator().manual_seed(5))
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler="Euler", cfg_scale=CFG, seed=1,
                  width=WIDTH, height=HEIGHT, latents=latents)
    out = base(**common, refiner=refiner, refiner_switch_at=0.5)
    fields = parse_infotext(out.infotexts[0])
    assert fields["Refiner switch at"] == "0.5" and "Refiner" in fields

    request = GenerationRequest.of(**common)
    plans = [bind(request, pipe.capabilities) for pipe in (base, refiner)]
    sigmas = modes.sigmas_for(base.parts, plans[0])
    k = switch_step(STEPS, 0.5)
    euler = samplers.get("Euler")
    with torch.no_grad():
        stages = [modes.guided(pipe.parts, plan, pipe._conditions(plan)[:2], 1, {})
                  for pipe, plan in zip((base, refiner), plans)]
        x = euler(stages[0], latents * sigmas[0], sigmas[: k + 1])
        x = euler(stages[1], x, sigmas[k:])
        by_hand = base.parts.space.decode(x)
    assert torch.allclose(out.tensors, by_hand, atol=1e-5)
    plain = base(**common)
    assert not torch.allclose(out.tensors, plain.tensors, atol=1e-3)  # the refiner did something


def test_refiner_alone_and_bad_refiners(pipes, tmp_path):
    base, refiner = pipes
    alone = refiner(prompt=PROMPT, steps=3, width=WIDTH, height=HEIGHT)
    assert alone.images[0].size == (WIDTH, HEIGHT)
    with pytest.raises(GenpixError, match="refiner_switch_at in \\(0, 1\\]"):
        base(prompt=PROMPT, steps=3, width=WIDTH, height=HEIGHT, refiner=refiner, refiner_switch_at=0)
    with pytest.raises(GenpixError, match="does not work in .* latent space"):
        base(prompt=PROMPT, steps=3, width=WIDTH, height=HEIGHT, refiner=genpix.load_pipeline("shapes-ldm"))


def test_refiner_from_the_cli(tmp_path_factory, run_cli, tmp_path):
    models = saved_models(tmp_path_factory)
    base, refiner = models("base")[1], models("refiner")[1]
    status, _, err = run_cli("generate", PROMPT, "--model", base, "--refiner", refiner, "--refiner-switch-at", 0.5,
                             "--steps", 4, "--width", WIDTH, "--height", HEIGHT, "-o", tmp_path)
    assert status == 0, err
    want = genpix.load_pipeline(str(base))(prompt=PROMPT, steps=4, width=WIDTH, height=HEIGHT,
                                           refiner=genpix.load_pipeline(str(refiner)), refiner_switch_at=0.5)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "00000.png")), np.asarray(want.images[0]))


def test_micro_conditioning_in_the_request_equals_diffusers(tmp_path_factory):
    from diffusers import EulerDiscreteScheduler
    from sdxl_fixtures import SDXL_SCHEDULER

    ref, folder, _ = saved_models(tmp_path_factory)("base")
    pipe = genpix.load_pipeline(str(folder))
    latents = torch.randn(1, 4, HEIGHT // 2, WIDTH // 2, generator=torch.Generator().manual_seed(7))
    ref.scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER, timestep_spacing="linspace")
    expected = ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=CFG, width=WIDTH,
                   height=HEIGHT, latents=latents, original_size=(64, 96), crops_coords_top_left=(8, 4),
                   target_size=(40, 56), output_type="np").images
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, sampler="Euler", cfg_scale=CFG, width=WIDTH,
               height=HEIGHT, latents=latents, original_size=(64, 96), crop_top_left=(8, 4), target_size=(40, 56))
    assert float(np.abs(out.tensors.permute(0, 2, 3, 1).numpy() - expected).max()) < 3 / 255
    plain = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, sampler="Euler", cfg_scale=CFG, width=WIDTH,
                 height=HEIGHT, latents=latents)
    assert not torch.allclose(out.tensors, plain.tensors, atol=1e-3)
    with pytest.raises(GenpixError, match=r"shapes-ldm \(ldm\) takes no original_size: micro-conditioning is SDXL's"):
        genpix.load_pipeline("shapes-ldm")(prompt="a red circle", original_size=(64, 64))
