"""Replays, against a real `genpix serve` on loopback, of the request sequences two real sd-webui clients send,
as read from their sources:

- SillyTavern (src/endpoints/stable-diffusion.js and the stable-diffusion extension's generateAutoImage):
  GET /options (ping), /upscalers + /latent-upscale-modes, /sd-vae (with Forge's /sd-modules beside it),
  /samplers, /schedulers, /sd-models, /options (current model); POST /options {sd_model_checkpoint} then
  /progress polled until progress 0 and job_count 0; generate: GET /options (Forge check), POST /txt2img with
  its payload (url/auth fields, enable_hr, override_settings CLIP_stop_at_last_layers / sd_vae, ...), and
  POST /interrupt when the user stops it.
- Open WebUI (backend/open_webui/routers/images.py): GET /options, POST the whole options dict back with
  sd_model_checkpoint changed, GET /sd-models ({id: title, name: model_name}), POST /txt2img {prompt,
  batch_size, width, height, steps, negative_prompt}.

Models: the bundled shapes-ldm (32 px, 2 steps) and the tiny class-conditional ddpm."""

import base64
import io
import json
import threading
import time

import pytest
import requests
from PIL import Image
from server_harness import ServerThread, train_tiny_class_model

from genpix.server import create_app


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("replays")
    train_tiny_class_model(root / "models")
    (root / "VAE").mkdir()
    (root / "VAE" / "anime.safetensors").write_bytes(b"only listed here")
    with ServerThread(create_app(models_dir=root / "models", vae_dir=root / "VAE", styles_file=None)) as url:
        yield url


def call(url, method, path, body=None, auth=""):
    r = requests.request(method, f"{url}/sdapi/v1/{path}", json=body, timeout=120, headers={"authorization": auth})
    return r


def ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def pictures(answer):
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in answer["images"]]


def test_sillytavern(url):
    assert call(url, "GET", "options").ok  # /ping
    upscalers = [x["name"] for x in ok(call(url, "GET", "upscalers"))]
    upscalers[1:1] = [x["name"] for x in ok(call(url, "GET", "latent-upscale-modes"))]
    assert upscalers[0] == "None" and "Latent" in upscalers
    vaes = [r.json() for r in (call(url, "GET", "sd-vae"), call(url, "GET", "sd-modules")) if r.ok]
    assert [x["model_name"] for x in vaes[0]] == ["anime.safetensors"]
    sampler_names = [x["name"] for x in ok(call(url, "GET", "samplers"))]
    scheduler_names = [x["name"] for x in ok(call(url, "GET", "schedulers"))]
    titles = [x["title"] for x in ok(call(url, "GET", "sd-models"))]
    assert "DPM++ 2M" in sampler_names and "karras" in scheduler_names
    assert ok(call(url, "GET", "options"))["sd_model_checkpoint"] in titles  # /get-model
    shapes = next(t for t in titles if t.startswith("shapes-ldm ["))
    assert call(url, "POST", "options", {"sd_model_checkpoint": shapes}).ok  # /set-model ...
    for _ in range(10):  # ... then waits for the load
        progress = ok(call(url, "GET", "progress"))
        if progress["progress"] == 0.0 and progress["state"]["job_count"] == 0:
            break
        time.sleep(0.1)
    assert "forge_preset" not in ok(call(url, "GET", "options"))  # /generate's Forge check
    payload = {"url": url, "auth": "", "prompt": "a red circle", "negative_prompt": "blurry",
               "sampler_name": "DPM++ 2M", "scheduler": "karras", "steps": 2, "cfg_scale": 7, "width": 32,
               "height": 32, "restore_faces": False, "enable_hr": True, "hr_upscaler": "Latent", "hr_scale": 2,
               "hr_additional_modules": [], "denoising_strength": 0.6, "hr_second_pass_steps": 2,
               "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_vae": "anime.safetensors"},
               "override_settings_restore_afterwards": True, "clip_skip": 1, "save_images": True,
               "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False}
    answer = ok(call(url, "POST", "txt2img", payload))
    info = json.loads(answer["info"])
    assert [p.size for p in pictures(answer)] == [(64, 64)]  # the hires fix's second pass at 2x
    assert info["ignored"] == ["sd_vae"] and info["sd_model_name"] == "shapes-ldm"  # no VAE file for it
    assert answer["parameters"]["prompt"] == "a red circle" and "Hires upscale: 2" in info["infotexts"][0]


def test_sillytavern_interrupt(url):
    body = {"prompt": "3", "steps": 100, "n_iter": 4, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "digits-ddpm"}}
    answers = []
    job = threading.Thread(target=lambda: answers.append(call(url, "POST", "txt2img", body)))
    job.start()
    while ok(call(url, "GET", "progress"))["state"]["sampling_step"] < 5:
        time.sleep(0.01)
    assert call(url, "POST", "interrupt").ok  # the socket closed before the answer
    job.join(60)
    info = json.loads(ok(answers[0])["info"])
    assert info["interrupted"] is True and len(answers[0].json()["images"]) < 4
    progress = ok(call(url, "GET", "progress"))
    assert progress["state"]["job_count"] == 0 and progress["progress"] == 0.0


def test_open_webui(url):
    options = ok(call(url, "GET", "options"))
    models = [{"id": m["title"], "name": m["model_name"]} for m in ok(call(url, "GET", "sd-models"))]
    model = next(m["id"] for m in models if m["name"] == "shapes-ldm")
    if model != options["sd_model_checkpoint"]:  # set_image_model: the whole dict goes back
        options["sd_model_checkpoint"] = model
        assert call(url, "POST", "options", options).ok
    assert ok(call(url, "GET", "options")) == options  # what it read, round-tripped
    answer = ok(call(url, "POST", "txt2img", {"prompt": "a blue square", "batch_size": 2, "width": 32,
                                              "height": 32, "steps": 2, "negative_prompt": "red"}))
    assert [p.size for p in pictures(answer)] == [(32, 32)] * 2
    info = json.loads(answer["info"])
    assert info["all_seeds"] == [info["seed"], info["seed"] + 1] and info["sd_model_name"] == "shapes-ldm"
