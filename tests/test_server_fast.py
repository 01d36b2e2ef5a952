"""Issue 19, server side: genpix's less-work settings (deepcache_interval, deepcache_block, tiny_decode, and
sd-webui's token_merging_ratio) through override_settings and /options, and GET /genpix/fast-preset (the
`genpix generate --fast` preset of pipelines/fast.py), against a real `genpix serve` on loopback
(tests/server_harness.py) with the bundled shapes-ldm (32x32 latent text model), fashion-ddpm (pixel U-Net)
and fashion-vae."""

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image
from server_harness import ServerThread

import genpix
from genpix.pipelines.fast import fast_preset
from genpix.server import create_app
from genpix.server.options import DEFAULTS

SHAPES = {"prompt": "a red circle", "seed": 3, "steps": 6, "sampler_name": "DPM++ 2M", "scheduler": "karras",
          "cfg_scale": 5.0, "batch_size": 1}
LESS_WORK = {"deepcache_interval": 2, "deepcache_block": 1, "token_merging_ratio": 0.5, "tiny_decode": True}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with ServerThread(create_app(models_dir=tmp_path_factory.mktemp("fast"))) as url:
        yield url


def txt2img(url, model="shapes-ldm", settings=None, **fields):
    """(pixels, info) of one picture of ``model`` with the override ``settings``."""
    body = {**SHAPES, **fields, "override_settings": {"sd_model_checkpoint": model, **(settings or {})}}
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))), dtype=np.int16)
    return pixels, json.loads(r.json()["info"])


def python_api(**fields):
    """The same picture through genpix.load_pipeline (uint8 pixels)."""
    out = genpix.load_pipeline("shapes-ldm")(prompt=SHAPES["prompt"], seed=3, steps=6, sampler="DPM++ 2M",
                                             schedule="karras", cfg_scale=5.0, n=1, **fields)
    return np.asarray(out.images[0], dtype=np.int16)


def test_less_work_settings_are_honoured_as_the_python_api_honours_them(url):
    exact, info = txt2img(url)
    assert np.array_equal(exact, python_api()) and info["ignored"] == []
    fast, info = txt2img(url, settings=LESS_WORK)
    assert np.abs(fast - exact).max() > 0 and info["ignored"] == []
    assert np.array_equal(fast, python_api(**LESS_WORK))
    for part in ("DeepCache interval: 2", "DeepCache block: 1", "Token merging ratio: 0.5", "Tiny decode: True"):
        assert part in info["infotexts"][0], info["infotexts"][0]
    cached, _ = txt2img(url, settings={"deepcache_interval": 2})
    assert np.array_equal(cached, python_api(deepcache_interval=2)) and np.abs(cached - exact).max() > 0
    tiny, info = txt2img(url, settings={"tiny_decode": True})
    assert np.array_equal(tiny, python_api(tiny_decode=True)) and "DeepCache" not in info["infotexts"][0]
    assert np.array_equal(txt2img(url, settings={"deepcache_interval": 1})[0], exact)  # every call full
    assert np.array_equal(txt2img(url)[0], exact)  # the override was for that request only


def test_options_apply_to_later_requests(url):
    exact, _ = txt2img(url)
    r = requests.post(f"{url}/sdapi/v1/options", json={"deepcache_interval": 2, "tiny_decode": True}, timeout=60)
    assert r.status_code == 200, r.text
    try:
        options = requests.get(f"{url}/sdapi/v1/options", timeout=60).json()
        assert options["deepcache_interval"] == 2 and options["tiny_decode"] is True
        later, info = txt2img(url)
        assert np.array_equal(later, python_api(deepcache_interval=2, tiny_decode=True))
        assert "DeepCache interval: 2" in info["infotexts"][0]
        assert np.array_equal(txt2img(url, settings={"deepcache_interval": 0, "tiny_decode": False})[0], exact)
    finally:
        requests.post(f"{url}/sdapi/v1/options", json={k: DEFAULTS[k] for k in LESS_WORK}, timeout=60)
    assert np.array_equal(txt2img(url)[0], exact)


@pytest.mark.parametrize("settings, message", [
    ({"deepcache_interval": -1}, "'deepcache_interval' must be at least 0"),
    ({"deepcache_interval": "2"}, "'deepcache_interval' must be a int"),
    ({"deepcache_interval": 2.5}, "'deepcache_interval' must be a int"),
    ({"deepcache_block": -2, "deepcache_interval": 2}, "'deepcache_block' must be at least 0"),
    ({"deepcache_block": 1}, "'deepcache_block' needs 'deepcache_interval' above 0"),
    ({"tiny_decode": "yes"}, "'tiny_decode' must be a bool"),
    ({"token_merging_ratio": -0.5}, "'token_merging_ratio' must be at least 0"),
])
def test_bad_values_are_refused_before_the_job(url, settings, message):
    body = {**SHAPES, "override_settings": {"sd_model_checkpoint": "shapes-ldm", **settings}}
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=60)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert f"override_settings {message.split()[0]}" in r.json()["detail"]
    r = requests.post(f"{url}/sdapi/v1/options", json=settings, timeout=60)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert requests.get(f"{url}/sdapi/v1/options", timeout=60).json()["deepcache_interval"] == 0  # nothing set


def test_models_that_cannot_honour_a_setting_name_it_as_ignored(url):
    pixel = {"prompt": "Sneaker", "sampler_name": "DDIM", "scheduler": "", "cfg_scale": 3.0}
    exact, _ = txt2img(url, "fashion-ddpm", **pixel)
    same, info = txt2img(url, "fashion-ddpm", {"token_merging_ratio": 0.5, "tiny_decode": True}, **pixel)
    assert np.array_equal(same, exact) and info["ignored"] == ["token_merging_ratio", "tiny_decode"]
    cached, info = txt2img(url, "fashion-ddpm", {"deepcache_interval": 2}, **pixel)  # its pixel U-Net caches
    assert np.abs(cached - exact).max() > 0 and info["ignored"] == []
    assert "DeepCache interval: 2" in info["infotexts"][0]
    body = {"batch_size": 1, "seed": 2, "override_settings": {"sd_model_checkpoint": "fashion-vae", **LESS_WORK}}
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert set(json.loads(r.json()["info"])["ignored"]) == set(LESS_WORK)


def test_fast_preset_is_the_cli_preset_in_txt2img_fields(url):
    def preset(**params):
        return requests.get(f"{url}/genpix/fast-preset", params=params, timeout=60)

    assert preset(model="shapes-ldm").json() == {
        "steps": 15, "sampler_name": "DPM++ 2M", "scheduler": "karras",
        "override_settings": {"deepcache_interval": 2, "deepcache_block": 0, "token_merging_ratio": 0.5,
                              "tiny_decode": True}}
    assert fast_preset(genpix.load_pipeline("shapes-ldm"))["steps"] == 15  # the same table
    lcm = preset(model="shapes-ldm", prompt="a circle <lora:lcm-lora-sdv1-5:1>").json()
    assert lcm == {"steps": 4, "sampler_name": "LCM", "scheduler": "automatic", "cfg_scale": 1.0,
                   "override_settings": {"deepcache_interval": 0, "deepcache_block": 0, "token_merging_ratio": 0.0,
                                         "tiny_decode": True}}
    pixel = preset(model="fashion-ddpm").json()
    assert pixel["override_settings"] == {"deepcache_interval": 2, "deepcache_block": 0, "token_merging_ratio": 0.0,
                                          "tiny_decode": False}
    r = preset(model="fashion-vae")
    assert r.status_code == 400
    assert r.json()["detail"] == "fashion-vae (vae) generates in one pass: it has no fast preset"
    r = preset(model="nope")
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["detail"]
    fields = preset(model="shapes-ldm").json()  # sent as it is, the preset is a valid request
    pixels, info = txt2img(url, settings=fields.pop("override_settings"), **{**fields, "steps": 4})
    assert info["ignored"] == [] and "DeepCache interval: 2" in info["infotexts"][0]
