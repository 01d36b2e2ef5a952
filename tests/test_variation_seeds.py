"""Variation seeds through the generation core: the pipeline's starting noise is sd-webui's variation
noise (diffusion/noise.py, checked against sd-webui's algorithm in tests/test_variation_noise.py), in the
CLI, Python and the HTTP API alike."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image
from server_harness import ServerThread

import genpix
from genpix.diffusion.noise import VariationNoise, variation_noise
from genpix.errors import GenpixError
from genpix.server import create_app

PROMPT = "a red circle at the top left"


@pytest.fixture(scope="module")
def pipe():
    return genpix.load_pipeline("shapes-ldm")


def test_subseed_noise_is_the_starting_noise(pipe):
    common = dict(prompt=PROMPT, steps=3, sampler="Euler", seed=5, n=2)
    varied = pipe(**common, subseed=40, subseed_strength=0.4)
    noise, _ = variation_noise(VariationNoise((5, 5), (40, 41), 0.4, factor=4), (4, 8, 8))
    given = pipe(**common, latents=noise)
    for a, b in zip(varied.images, given.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert varied.info["seeds"] == [5, 5] and varied.info["subseeds"] == [40, 41]
    assert "Seed: 5, Variation seed: 41, Variation seed strength: 0.4" in varied.infotexts[1]
    plain = pipe(**{**common, "n": 1})
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(varied.images[0]))


def test_seed_resize_keeps_the_composition_of_the_other_size(pipe):
    out = pipe(prompt=PROMPT, steps=3, sampler="Euler", seed=5, width=32, height=32,
               seed_resize_from_w=16, seed_resize_from_h=16)
    noise, _ = variation_noise(VariationNoise((5,), seed_resize_from_h=16, seed_resize_from_w=16, factor=4), (4, 8, 8))
    same = pipe(prompt=PROMPT, steps=3, sampler="Euler", seed=5, latents=noise)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(same.images[0]))
    assert "Seed resize from: 16x16" in out.infotexts[0]


def test_one_pass_models_refuse_variation_noise():
    with pytest.raises(GenpixError, match=r"fashion-vae \(vae\) takes no subseed_strength"):
        genpix.load_pipeline("fashion-vae")(subseed_strength=0.5)


def test_the_api_takes_sd_webui_variation_fields(pipe, run_cli, tmp_path):
    body = {"prompt": PROMPT, "steps": 3, "sampler_name": "Euler", "seed": 5, "subseed": 40,
            "subseed_strength": 0.4, "batch_size": 2, "n_iter": 2,
            "override_settings": {"sd_model_checkpoint": "shapes-ldm"}}
    with ServerThread(create_app()) as url:
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["all_seeds"] == [5] * 4 and info["all_subseeds"] == [40, 41, 42, 43] and "ignored" in info
    assert "subseed_strength" not in info["ignored"]
    want = pipe(prompt=PROMPT, steps=3, sampler="Euler", seed=5, subseed=42, subseed_strength=0.4, n=2)
    got = [np.asarray(Image.open(io.BytesIO(base64.b64decode(t)))) for t in r.json()["images"][2:]]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(got, want.images))
    status, _, err = run_cli("generate", PROMPT, "--model", "shapes-ldm", "--steps", 3, "--sampler", "Euler",
                             "--seed", 5, "--subseed", 42,
                             "--subseed-strength", 0.4, "-n", 2, "-o", tmp_path)
    assert status == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "00001.png")), np.asarray(want.images[1]))


def test_token_merging_ratio_as_an_sd_webui_setting(pipe):
    body = {"prompt": PROMPT, "steps": 3, "sampler_name": "Euler", "seed": 5,
            "override_settings": {"token_merging_ratio": 0.5, "sd_model_checkpoint": "shapes-ldm"}}
    with ServerThread(create_app()) as url:
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert "override_settings.token_merging_ratio" not in json.loads(r.json()["info"])["ignored"]
    want = pipe(prompt=PROMPT, steps=3, sampler="Euler", seed=5, token_merging_ratio=0.5)
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))))
    assert np.array_equal(got, np.asarray(want.images[0]))


def test_live_preview_content_other_than_combined_is_named():
    with ServerThread(create_app()) as url:
        assert requests.post(f"{url}/sdapi/v1/options", json={"live_preview_content": "Prompt"}, timeout=30).ok
        assert requests.get(f"{url}/sdapi/v1/options", timeout=30).json()["live_preview_content"] == "Prompt"
        r = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": 2}, timeout=60)
        assert "live_preview_content" in json.loads(r.json()["info"])["ignored"]
        bad = requests.post(f"{url}/sdapi/v1/options", json={"live_preview_content": "Sideways"}, timeout=30)
        assert bad.status_code == 422
