"""The hires fix (pipelines/hires.py) on a tiny Stable Diffusion fixture: equal to txt2img, the upscale and
img2img done by hand; latent modes; the CLI flags and the API's enable_hr; bad input."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from server_harness import ServerThread
from test_sd_pipeline import tiny_diffusers
from test_tokenizer import CORPUS, train_bpe

import genpix
from genpix.errors import GenpixError
from genpix.pipelines.masking import pictures_to_batch
from genpix.pipelines.upscale import Upscaler, upscale_image
from genpix.server import create_app

PROMPT, NEGATIVE = "a photo of an astronaut riding a horse", "blurry"
BASE = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, sampler="Euler a", cfg_scale=7.0, seed=3, width=32,
            height=24, n=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hires")
    tiny_diffusers(root, train_bpe(CORPUS, 60), "sd1").save_pretrained(root / "models" / "tiny-sd")
    return root / "models" / "tiny-sd"


@pytest.fixture(scope="module")
def pipe(folder):
    return genpix.load_pipeline(str(folder))


def test_hires_with_an_image_upscaler_is_txt2img_upscale_img2img(pipe):
    hires = pipe(**BASE, enable_hr=True, hr_scale=2, hr_upscaler="Lanczos", strength=0.5)
    first = pipe(**BASE)
    upscaled = [upscale_image(im, Upscaler("Lanczos"), size=(64, 48)) for im in first.images]
    # 4 second-pass steps at strength 0.5: the last 4 of an 8-step schedule, from the same seeds
    by_hand = pipe(**{**BASE, "steps": 8, "width": 64, "height": 48}, strength=0.5,
                   init_images=pictures_to_batch(upscaled, (64, 48), 3))
    for a, b in zip(hires.images, by_hand.images, strict=True):
        assert a.size == (64, 48) and np.array_equal(np.asarray(a), np.asarray(b))
    text = hires.infotexts[0]
    assert "Size: 32x24" in text and "Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Lanczos" in text


def test_latent_modes_and_second_pass_options(pipe):
    latent = pipe(**BASE, enable_hr=True, hr_resize_x=48, hr_second_pass_steps=2, hr_sampler="DPM++ 2M",
                  hr_prompt="a horse", strength=0.6)
    assert latent.images[0].size == (48, 32)  # one side given: the other keeps the aspect ratio
    text = latent.infotexts[0]
    assert "Hires resize: 48x0, Hires steps: 2, Hires upscaler: Latent, Hires sampler: DPM++ 2M" in text
    assert "Hires prompt: a horse" in text
    bicubic = pipe(**BASE, enable_hr=True, hr_resize_x=48, hr_second_pass_steps=2, hr_sampler="DPM++ 2M",
                   hr_prompt="a horse", strength=0.6, hr_upscaler="Latent (bicubic antialiased)")
    assert not np.array_equal(np.asarray(latent.images[0]), np.asarray(bicubic.images[0]))


@pytest.mark.parametrize("fields, message", [
    (dict(hr_scale=0.5), "hr_scale must be between 1 and 8"),
    (dict(hr_scale=8, width=1024, height=1024), "the hires fix would make 8192x8192 images"),
    (dict(hr_upscaler="4x-nothing"), "unknown upscaler '4x-nothing'"),
    (dict(strength=0.0), "denoising strength must be above 0"),
    (dict(init_images=torch.zeros(1, 3, 24, 32)), "the hires fix is for txt2img"),
])
def test_bad_hires_requests_are_one_line_errors(pipe, fields, message):
    with pytest.raises(GenpixError, match=message):
        pipe(**{**BASE, "n": 1, **fields}, enable_hr=True)


def test_hires_through_the_cli_and_the_api(folder, pipe, run_cli, tmp_path):
    status, _, err = run_cli("generate", PROMPT, "--model", folder, "--negative-prompt", NEGATIVE, "--steps", 4,
                             "--seed", 3, "--width", 32, "--height", 24, "--hires-scale", 2, "--hires-denoise", 0.5,
                             "--hires-upscaler", "Lanczos", "-o", tmp_path)
    assert status == 0, err
    want = pipe(**{**BASE, "n": 1}, enable_hr=True, hr_scale=2, hr_upscaler="Lanczos", strength=0.5)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "00000.png")), np.asarray(want.images[0]))
    status, _, err = run_cli("generate", PROMPT, "--model", folder, "--hires-denoise", 0.5, "-o", tmp_path)
    assert status == 1 and "need --hires-scale" in err
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": 4, "sampler_name": "Euler a", "cfg_scale": 7,
            "seed": 3, "width": 32, "height": 24, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Lanczos",
            "denoising_strength": 0.5, "override_settings": {"sd_model_checkpoint": "tiny-sd"}}
    with ServerThread(create_app(models_dir=folder.parent)) as url:
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)
        bad = requests.post(f"{url}/sdapi/v1/txt2img", json={**body, "hr_scale": 0.5}, timeout=60)
    assert r.status_code == 200, r.text
    assert "enable_hr" not in json.loads(r.json()["info"])["ignored"]
    got = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert np.array_equal(np.asarray(got), np.asarray(want.images[0]))
    assert bad.status_code == 400 and "hr_scale must be between 1 and 8" in bad.json()["detail"]
