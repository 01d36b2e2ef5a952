"""`genpix train ddpm` and `genpix sample` on a diffusion model, end to end on tiny settings."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tiny_ddpm import TINY_DDPM

import genpix

TINY = TINY_DDPM


@pytest.fixture
def class_model(tiny_ddpm):
    return tiny_ddpm  # the shared tiny class model (tests/tiny_ddpm.py): 4 steps, T = 100


def test_training_writes_a_model_with_ema_weights_and_sample_grid(class_model):
    config = json.loads((class_model / "config.json").read_text())
    assert config["family"] == "ddpm" and config["model"]["cond"] == "class"
    assert config["model"]["num_classes"] == 10 and config["train"]["lr_schedule"] == "cosine"
    roles = {k.split(".")[0] for k in load_file(class_model / "model.safetensors")}
    assert roles == {"unet", "ema"}
    assert (class_model / "samples" / "samples-00000004.png").is_file()
    assert json.loads((class_model / "metrics.json").read_text())["test_loss"] > 0


def test_sample_by_class_is_seeded_per_image(class_model, tmp_path, run_cli):
    status, out, err = run_cli("sample", class_model, "-n", "3", "--steps", "4", "--sampler", "DDIM",
                               "--class", "7", "--cfg-scale", "2", "--npy", tmp_path / "a.npy", "--device", "cpu")
    assert status == 0, err
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (3, 8, 8, 1) and a.dtype == np.uint8
    pipe = genpix.load_pipeline(str(class_model))
    one = pipe(n=1, seed=1, steps=4, sampler="DDIM", cfg_scale=2.0, class_name="7")
    assert np.array_equal(np.asarray(one.images[0]), a[1, :, :, 0])  # image 1 = seed 0 + 1, alone or not
    assert "Class: 7" in one.infotexts[0] and "CFG scale: 2.0" in one.infotexts[0]
    steps = []
    pipe(n=2, steps=3, sampler="DDPM", class_name=2, callback=lambda d: steps.append(d["i"]))
    assert steps == [0, 1, 2]


@pytest.mark.parametrize("args, message", [
    (["--class", "sneaker"], "unknown class 'sneaker'; this model knows: 0, 1, 2"),
    (["--sampler", "PLMS 2"], "unknown sampler 'PLMS 2'; choose one of: DPM++ 2M, DPM++ SDE,"),
    (["--steps", "101"], "steps must be between 1 and the model's 100 timesteps, got 101"),
    (["--prompt", "a cat"], "unknown class 'a cat'; this model knows: 0, 1"),  # a class model's prompt is a class
])
def test_sampling_errors_are_one_line(class_model, run_cli, args, message):
    status, _, err = run_cli("sample", class_model, "-n", "1", "--steps", "2", *args, "-o", "unused")
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, run_cli):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = [*TINY, "--checkpoint-every", "2", "--prediction", "v", "--min-snr-gamma", "5"]
    assert run_cli("train", "ddpm", *common, "--steps", "4", "--out", straight)[0] == 0
    assert run_cli("train", "ddpm", *common, "--steps", "2", "--out", split)[0] == 0
    status, _, err = run_cli("train", "ddpm", "--out", split, "--resume", "--steps", "4", "--quiet")
    assert status == 0, err
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_seed_schedule_with_mae_trains_and_samples(tmp_path, run_cli):
    out = tmp_path / "cos"
    status, _, err = run_cli("train", "ddpm", *TINY, "--steps", "2", "--schedule", "signal_cosine",
                             "--loss", "mae", "--out", out)
    assert status == 0, err
    images = genpix.load_pipeline(str(out))(n=2, steps=3, sampler="Euler").tensors
    assert images.shape == (2, 1, 8, 8) and 0 <= images.min() and images.max() <= 1


def test_bad_training_input(tmp_path, run_cli):
    from PIL import Image

    folder = tmp_path / "flat"  # images straight in one folder carry no class labels
    folder.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(folder / f"{i}.png")
    status, _, err = run_cli("train", "ddpm", *TINY, "--steps", "1", "--data", folder, "--cond", "class",
                             "--out", tmp_path / "x")
    assert status == 1 and "--cond class needs a dataset with class labels" in err
    status, _, err = run_cli("train", "ddpm", *TINY, "--schedule", "sigmoid", "--out", tmp_path / "y")
    assert status == 2 and "invalid choice: 'sigmoid'" in err


def test_nan_loss_stops_training_and_names_the_last_good_checkpoint(tmp_path, run_cli):
    status, _, err = run_cli("train", "ddpm", *TINY, "--steps", "6", "--lr", "1e30", "--warmup-steps", "0",
                             "--grad-clip", "0", "--checkpoint-every", "1", "--out", tmp_path / "nan")
    assert status == 1 and "training stopped" in err and "Last good checkpoint: step" in err


def test_sample_every_class_makes_one_grid_row_per_class(class_model, tmp_path, run_cli):
    status, out, err = run_cli("sample", class_model, "--class", "all", "-n", "2", "--steps", "3",
                               "--npy", tmp_path / "all.npy", "--grid", tmp_path / "grid.png", "--device", "cpu")
    assert status == 0, err
    a = np.load(tmp_path / "all.npy")
    assert a.shape == (20, 8, 8, 1)  # 10 digit classes x 2
    pipe = genpix.load_pipeline(str(class_model))
    seven = pipe(n=2, seed=0, steps=3, class_name="7")
    assert np.array_equal(np.asarray(seven.images[1]), a[15, :, :, 0])  # class 7, image 1
    from PIL import Image

    # 2 columns, 10 rows of 8 px with 2 px gaps, enlarged x12 (nearest) so its short side reaches 256 px
    assert Image.open(tmp_path / "grid.png").size == (12 * (2 * 8 + 3 * 2), 12 * (10 * 8 + 11 * 2))
    status, _, err = run_cli("sample", "fashion-vae", "--class", "all", "-n", "2", "--npy", tmp_path / "v.npy")
    assert status == 1 and "needs a class-conditional model" in err
