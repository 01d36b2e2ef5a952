"""`genpix img2img` (SDEdit), `genpix sample --trajectory` and the sampling progress bar."""

import numpy as np
import pytest
import torch
from PIL import Image

import genpix


@pytest.fixture
def model(tiny_ddpm):
    return tiny_ddpm  # the shared tiny class model (tests/tiny_ddpm.py)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "in.png"
    gradient = np.tile(np.linspace(0, 255, 30, dtype=np.uint8), (20, 1))
    Image.fromarray(gradient).convert("RGB").save(path)  # RGB, 30x20: converted and cropped
    return path


def test_strength_zero_returns_the_image_and_one_ignores_it(model):
    pipe = genpix.load_pipeline(str(model))
    init = torch.rand(1, 1, 8, 8)
    same = pipe(n=1, seed=0, steps=10, init_images=init, strength=0.0)
    assert torch.allclose(same.tensors, init, atol=1 / 255)
    totals = []
    full = pipe(n=1, seed=0, steps=10, init_images=init, strength=1.0,
                callback=lambda info: totals.append(info["total"])).tensors
    half = pipe(n=1, seed=0, steps=10, init_images=init, strength=0.5,
                callback=lambda info: totals.append(info["total"]))
    assert totals == [10] * 10 + [5] * 5  # as sd-webui: int(strength * steps) of the steps run
    assert "Denoising strength: 0.5" in half.infotexts[0]
    assert (half.tensors - init).abs().mean() < (full - init).abs().mean()


def test_img2img_command_both_forms(model, picture, tmp_path, run_cli):
    status, out, err = run_cli("img2img", model, picture, "--strength", "0.5", "--steps", "6",
                               "-n", "2", "-o", tmp_path / "a", "--device", "cpu")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["00000.png", "00001.png"]
    assert Image.open(tmp_path / "a" / "00000.png").size == (8, 8)
    status, _, err = run_cli("img2img", picture, "--model", model, "--steps", "6", "--npy", tmp_path / "b.npy")
    assert status == 0, err
    assert np.load(tmp_path / "b.npy").shape == (1, 8, 8, 1)


@pytest.mark.parametrize("args,message", [
    (["--strength", "1.5"], "strength must be between 0 and 1"),
    (["--class", "dragon"], "unknown class 'dragon'"),
])
def test_img2img_bad_input(model, picture, args, message, run_cli):
    status, _, err = run_cli("img2img", model, picture, "--steps", "4", *args)
    assert status == 1 and message in err


def test_img2img_refuses_non_diffusion_models_and_missing_images(picture, tmp_path, run_cli):
    status, _, err = run_cli("img2img", "fashion-vae", picture)
    assert status == 1 and "cannot do img2img" in err
    status, out, err = run_cli("img2img", picture, "a red circle", "--steps", "2", "-o", tmp_path / "default")
    assert status == 0 and "Model: emoji-ldm" in Image.open(tmp_path / "default" / "00000.png").info["parameters"], err
    status, _, err = run_cli("img2img", "fashion-vae", tmp_path / "nope.png")
    assert status == 1


def test_trajectory_strip_and_progress_bar(model, tmp_path, run_cli):
    status, _, err = run_cli("sample", model, "-n", "2", "--steps", "20", "--grid", tmp_path / "g.png",
                             "--trajectory", tmp_path / "t.png", "--device", "cpu")
    assert status == 0, err
    strip = Image.open(tmp_path / "t.png")
    assert strip.height > 2 * 8 and strip.height < 3 * 8 + 8  # x_t row above the x0 row
    assert strip.width >= 10 * 8  # about ten columns
    assert "20/20" in err  # the progress bar reached the last step
    status, _, err = run_cli("sample", "fashion-vae", "-n", "1", "--trajectory", tmp_path / "v.png")
    assert status == 1 and "--trajectory needs a diffusion model" in err
