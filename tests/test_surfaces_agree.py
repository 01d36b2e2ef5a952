"""One generation core: the same request through the CLI, ``genpix.load_pipeline(...)(...)`` and the
HTTP API (``POST /sdapi/v1/txt2img`` / ``img2img``, a real server on loopback) gives identical pixels,
for a pixel diffusion model, a latent diffusion model and a tiny Stable Diffusion model, in txt2img,
img2img and inpainting; and the options a model cannot honour are refused (CLI, Python) or reported in
``info["ignored"]`` (HTTP) under the same names."""

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
from tiny_ddpm import copy_tiny_ddpm

import genpix
from genpix.errors import GenpixError
from genpix.server import create_app

SEED, STEPS = 11, 3
CASES = {  # model -> (prompt, negative prompt, sampler, CFG scale, side)
    "digits-ddpm": ("7", "", "Euler a", 2.0, 8),  # pixel diffusion, class-conditional: the prompt is a class
    "shapes-ldm": ("a red circle at the top left", "a blue square", "DPM++ 2M", 4.0, 32),  # latent diffusion
    "tiny-sd": ("a photo of an astronaut riding a horse", "blurry", "Euler a", 7.0, 32),  # Stable Diffusion
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("surfaces")
    copy_tiny_ddpm(root / "models" / "digits-ddpm")
    tiny_diffusers(root, train_bpe(CORPUS, 60), "sd1").save_pretrained(root / "models" / "tiny-sd")
    return root / "models"


@pytest.fixture(scope="module")
def server(models):
    with ServerThread(create_app(models_dir=models)) as url:
        yield url


def model_path(models, name: str) -> str:
    return name if name == "shapes-ldm" else str(models / name)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def init_picture(name: str, side: int) -> Image.Image:
    """A fixed picture at the model's size: a colour ramp (grayscale for the digits model)."""
    ramp = np.linspace(0, 255, side * side * 3).reshape(side, side, 3).astype(np.uint8)
    picture = Image.fromarray(ramp)
    return picture.convert("L") if name == "digits-ddpm" else picture


def half_mask(side: int) -> Image.Image:
    mask = np.zeros((side, side), np.uint8)
    mask[:, side // 2:] = 255
    return Image.fromarray(mask)


def b64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def tensor(picture: Image.Image) -> torch.Tensor:
    array = np.asarray(picture, dtype=np.float32) / 255
    return torch.from_numpy(array[None, None] if array.ndim == 2 else array.transpose(2, 0, 1)[None])


def via_http(server: str, name: str, mode: str, extra: dict) -> list[np.ndarray]:
    prompt, negative, sampler, cfg, _ = CASES[name]
    body = {"prompt": prompt, "negative_prompt": negative, "seed": SEED, "sampler_name": sampler, "steps": STEPS,
            "cfg_scale": cfg, "batch_size": 2, "override_settings": {"sd_model_checkpoint": name}, **extra}
    r = requests.post(f"{server}/sdapi/v1/{'txt2img' if mode == 'txt2img' else 'img2img'}", json=body, timeout=300)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["all_seeds"] == [SEED, SEED + 1]
    return [pixels(Image.open(io.BytesIO(base64.b64decode(text)))) for text in r.json()["images"]]


def via_cli(run_cli, tmp_path, models, name: str, mode: str, files: dict) -> list[np.ndarray]:
    prompt, negative, sampler, cfg, _ = CASES[name]
    common = ["--model", model_path(models, name), "--negative-prompt", negative, "--seed", SEED, "--sampler",
              sampler, "--steps", STEPS, "--cfg-scale", cfg, "-n", 2, "-o", tmp_path / mode]
    if mode == "txt2img":
        args = ["generate", prompt, *common]
    elif mode == "img2img":
        args = ["img2img", files["init"], prompt, "--strength", 0.6, *common]
    else:
        args = ["inpaint", files["init"], files["mask"], prompt, "--strength", 0.8, "--mask-blur", 0, *common]
    status, _, err = run_cli(*args)
    assert status == 0, err
    return [pixels(Image.open(tmp_path / mode / f"{i:05d}.png")) for i in range(2)]


@pytest.mark.parametrize("name", list(CASES))
def test_cli_python_and_http_make_the_same_pixels(name, models, server, run_cli, tmp_path):
    prompt, negative, sampler, cfg, side = CASES[name]
    picture, mask = init_picture(name, side), half_mask(side)
    picture.save(tmp_path / "init.png")
    mask.save(tmp_path / "mask.png")
    files = {"init": tmp_path / "init.png", "mask": tmp_path / "mask.png"}
    pipe = genpix.load_pipeline(model_path(models, name))
    request = dict(prompt=prompt, negative_prompt=negative, steps=STEPS, sampler=sampler, cfg_scale=cfg, seed=SEED,
                   width=side, height=side, n=2)
    modes = {
        "txt2img": ({}, {}),
        "img2img": ({"init_images": tensor(picture), "strength": 0.6},
                    {"init_images": [b64(picture)], "denoising_strength": 0.6}),
        "inpaint": ({"init_images": tensor(picture), "mask": tensor(mask), "strength": 0.8, "mask_blur": 0},
                    {"init_images": [b64(picture)], "mask": b64(mask), "denoising_strength": 0.8, "mask_blur": 0,
                     "inpainting_fill": 1, "inpaint_full_res": False}),
    }
    for mode, (python_extra, http_extra) in modes.items():
        python = [pixels(im) for im in pipe(**request, **python_extra).images]
        cli = via_cli(run_cli, tmp_path, models, name, mode, files)
        http = via_http(server, name, mode, http_extra)
        for a, b, c in zip(python, cli, http, strict=True):
            assert a.shape == b.shape == c.shape and a.shape[:2] == (side, side), mode
            assert np.array_equal(a, b) and np.array_equal(a, c), f"{name} {mode}: the surfaces disagree"
        if mode != "txt2img":  # the unmasked half of an inpainting comes back as it was
            assert not np.array_equal(python[0], pixels(picture)), f"{name} {mode} changed nothing"


def test_an_option_the_model_cannot_honour_is_named_everywhere(models, server, run_cli, tmp_path):
    vae = genpix.load_pipeline("fashion-vae")
    with pytest.raises(GenpixError, match=r"fashion-vae \(vae\) takes no steps"):
        vae(steps=5)
    with pytest.raises(GenpixError, match="unknown generation option: stepz \\(did you mean steps\\?\\)"):
        vae(stepz=5)
    status, _, err = run_cli("generate", "a red circle", "--clip-skip", "2", "-o", tmp_path)
    assert status == 1 and err.strip() == ("genpix: error: emoji-ldm (ldm) takes no --clip-skip: it has no CLIP "
                                           "text encoder")
    body = {"prompt": "", "steps": 5, "cfg_scale": 7, "enable_hr": True, "batch_size": 1,
            "override_settings": {"sd_model_checkpoint": "fashion-vae", "CLIP_stop_at_last_layers": 2}}
    r = requests.post(f"{server}/sdapi/v1/txt2img", json=body, timeout=60)
    assert r.status_code == 200, r.text
    ignored = json.loads(r.json()["info"])["ignored"]
    assert set(ignored) == {"enable_hr", "steps", "cfg_scale", "clip_skip"}


def test_sizes_default_to_the_model_and_off_grid_sizes_are_refused_alike(models, server, run_cli, tmp_path):
    r = requests.post(f"{server}/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2,
                                                           "override_settings": {"sd_model_checkpoint": "shapes-ldm"}},
                      timeout=60)
    assert r.status_code == 200 and Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (32, 32)
    message = "width and height must be positive multiples of 8, got 36x32"
    r = requests.post(f"{server}/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2, "width": 36,
                                                           "override_settings": {"sd_model_checkpoint": "shapes-ldm"}},
                      timeout=60)
    assert r.status_code == 400 and r.json()["detail"] == message
    status, _, err = run_cli("generate", "a red circle", "--model", "shapes-ldm", "--steps", "2", "--width", "36",
                             "-o", tmp_path)
    assert status == 1 and err.strip() == f"genpix: error: {message}"
    with pytest.raises(GenpixError, match=message):
        genpix.load_pipeline("shapes-ldm")(prompt="a red circle", steps=2, width=36)


def test_the_sd_loading_options_are_the_typed_configs_fields():
    from dataclasses import fields

    from genpix.pipelines import FAMILIES
    from genpix.pipelines.text_to_image import SDLoading

    assert FAMILIES["sd"].options == {f.name for f in fields(SDLoading)}
    with pytest.raises(GenpixError, match="a ldm model takes no tokenizer"):
        genpix.load_pipeline("shapes-ldm", tokenizer="x")
