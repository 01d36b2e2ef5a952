"""SDXL through `genpix serve` (issue 18): a tiny SDXL model (tests/sdxl_fixtures.py) in --models-dir listed and
selected through /options, made at its native size by default, sd_vae (a --vae-dir file), clip skip set through
/options, and the API's refiner_checkpoint / refiner_switch_at, each equal to the same request made directly
with genpix.load_pipeline."""

import base64
import io
import json
import shutil

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image
from safetensors.torch import load_file, save_file
from sdxl_fixtures import saved_models
from server_harness import ServerThread
from test_sd_pipeline import tiny_diffusers
from test_tokenizer import CORPUS, train_bpe

import genpix
from genpix.server import create_app

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]
COMMON = {"prompt": "a red circle", "negative_prompt": "blurry", "seed": 4, "steps": 3, "cfg_scale": 5.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    models = saved_models(tmp_path_factory)
    root = tmp_path_factory.mktemp("server-sdxl")
    for kind in ("base", "refiner"):
        shutil.copytree(models(kind)[1], root / "models" / f"xl-{kind}")
    tiny_diffusers(root, train_bpe(CORPUS, 60), "sd1").save_pretrained(root / "models" / "tiny-sd1")
    vae = load_file(root / "models" / "xl-base" / "vae" / "diffusion_pytorch_model.safetensors")
    vae["decoder.conv_out.weight"] = vae["decoder.conv_out.weight"] * 0.5  # another VAE: softer colours
    (root / "VAE").mkdir()
    save_file(vae, root / "VAE" / "soft.safetensors")
    with ServerThread(create_app(models_dir=root / "models", vae_dir=root / "VAE", styles_file=None)) as url:
        yield url, root


@pytest.fixture(scope="module")
def direct(setup):
    """Loaded pipelines for the same requests made directly."""
    _, root = setup
    base = genpix.load_pipeline(str(root / "models" / "xl-base"))
    return {"base": base, "refiner": genpix.load_pipeline(str(root / "models" / "xl-refiner")),
            "sd1": genpix.load_pipeline(str(root / "models" / "tiny-sd1")),
            "soft": genpix.load_pipeline(str(root / "models" / "xl-base"), vae=str(root / "VAE" / "soft.safetensors"))}


def txt2img(url, **fields):
    r = requests.post(f"{url}/sdapi/v1/txt2img", json={**COMMON, "sampler_name": "Euler", **fields}, timeout=300)
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    return np.asarray(image, dtype=np.int16), json.loads(r.json()["info"])


def same(pixels, image):
    return np.abs(pixels - np.asarray(image, dtype=np.int16)).max() <= 1


def test_sdxl_listed_selected_and_at_its_native_size(setup, direct):
    url, _ = setup
    api = webuiapi.WebUIApi(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
    title = next(t for t in api.util_get_model_names() if t.startswith("xl-base ["))
    api.set_options({"sd_model_checkpoint": title})
    assert api.get_options()["sd_model_checkpoint"] == title
    pixels, info = txt2img(url)
    base = direct["base"]
    assert (info["width"], info["height"]) == base.capabilities.native_size
    assert same(pixels, base(**COMMON, sampler="Euler").images[0]) and info["ignored"] == []


def test_clip_skip_set_through_options_applies_to_later_requests(setup, direct):
    url, _ = setup
    sd1 = {"sd_model_checkpoint": "tiny-sd1"}
    plain, _ = txt2img(url, override_settings=sd1)
    requests.post(f"{url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=30).raise_for_status()
    skipped, info = txt2img(url, override_settings=sd1)
    requests.post(f"{url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1}, timeout=30).raise_for_status()
    assert same(skipped, direct["sd1"](**COMMON, sampler="Euler", clip_skip=2).images[0]) and info["clip_skip"] == 2
    assert same(plain, direct["sd1"](**COMMON, sampler="Euler").images[0]) and not same(skipped, plain)


def test_sd_vae_per_request(setup, direct):
    url, _ = setup
    plain, _ = txt2img(url, override_settings={"sd_model_checkpoint": "xl-base", "sd_vae": "Automatic"})
    soft, info = txt2img(url, override_settings={"sd_model_checkpoint": "xl-base", "sd_vae": "soft.safetensors"})
    assert same(soft, direct["soft"](**COMMON, sampler="Euler").images[0]) and not same(soft, plain)
    assert info["sd_vae_name"] == "soft.safetensors" and info["ignored"] == []
    again, info = txt2img(url, override_settings={"sd_model_checkpoint": "xl-base"})
    assert same(again, plain) and info["sd_vae_name"] is None  # restored after the request


def test_refiner_checkpoint(setup, direct):
    url, _ = setup
    refiner_title = next(m["title"] for m in requests.get(f"{url}/sdapi/v1/sd-models", timeout=30).json()
                         if m["model_name"] == "xl-refiner")
    pixels, info = txt2img(url, refiner_checkpoint=refiner_title, refiner_switch_at=0.5,
                           override_settings={"sd_model_checkpoint": "xl-base"})
    by_hand = direct["base"](**COMMON, sampler="Euler", refiner=direct["refiner"], refiner_switch_at=0.5)
    assert same(pixels, by_hand.images[0]) and "Refiner switch at: 0.5" in info["infotexts"][0]
    r = requests.post(f"{url}/sdapi/v1/txt2img", json={**COMMON, "refiner_checkpoint": "nope"}, timeout=60)
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["detail"]
