"""Bad input of issues 2 and 3 through the ``genpix`` command: one clear line, a non-zero exit, no
traceback, no checkpoint. (The data layer's and checkpoint reader's own errors are tested in
test_data*.py and test_checkpoint.py; this file checks what a user of the command sees.)"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

TINY = ["--data", "digits", "--image-size", "16", "--limit", "64", "--batch-size", "8", "--quiet",
        "--device", "cpu"]
FAMILY = {"vae": ["--widths", "8,16"], "gan": ["--width", "8"],
          "ddpm": ["--base-channels", "8", "--channel-mult", "1,2", "--attention-levels", "1"]}


def assert_one_line_error(status, err, message):
    lines = err.strip().splitlines()
    assert status != 0 and len(lines) == 1, err
    assert lines[0].startswith("genpix: error:") and message in lines[0], err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny VAE run folder with checkpoints at steps 1 and 2."""
    from genpix.cli import main

    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "vae", *TINY, *FAMILY["vae"], "--steps", "2", "--checkpoint-every", "1",
                 "--out", str(out)]) == 0
    return out


def broken_images(folder, good=0):
    """A truncated PNG, random bytes named .jpg, a text file named .png, a 1x1 image and a valid
    20000x20000 PNG header (a decompression bomb of 400 megapixels), plus ``good`` readable images."""
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "whole.png").unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "garbage.jpg").write_bytes(bytes(np.random.default_rng(1).integers(0, 255, 500, np.uint8)))
    (folder / "text.png").write_text("this is not an image\n")
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    Image.new("1", (20000, 20000)).save(folder / "huge.png")
    for i in range(good):
        Image.new("L", (20, 20), 20 * i).save(folder / f"good{i}.png")
    return folder


def test_missing_dataset_files_say_where_to_put_them(tmp_path):
    # a real process, downloads refused by an unreachable proxy: the same result online or offline
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy" and k != "GENPIX_DATA_DIR"}
    env.update(https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", XDG_CACHE_HOME=str(tmp_path))
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "genpix", "train", "vae", "--data", "mnist", "--data-dir",
                             str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "mnist: missing train-images-idx3-ubyte.gz")
    assert "--data-dir" in result.stderr and "download failed" in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_folder_of_only_unreadable_images_is_one_line(tmp_path, run_cli):
    folder = broken_images(tmp_path / "pics")
    tic = time.perf_counter()
    status, _, err = run_cli("train", "vae", "--data", folder, "--out", tmp_path / "o")
    assert time.perf_counter() - tic < 10  # the 400-megapixel image is never decoded
    assert_one_line_error(status, err, f"no readable images in {folder} (5 files skipped:")
    assert not (tmp_path / "o").exists()


def test_unreadable_images_beside_good_ones_are_one_warning(tmp_path, run_cli):
    folder = broken_images(tmp_path / "pics", good=12)
    status, _, err = run_cli("train", "vae", "--data", folder, "--image-size", "16", *FAMILY["vae"],
                             "--steps", "1", "--quiet", "--out", tmp_path / "o")
    assert status == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genpix: warning:") and "files skipped" in lines[0], err


@pytest.mark.parametrize("family", list(FAMILY))
@pytest.mark.parametrize("flags, message", [
    (["--steps", "-1"], "--steps must be at least 1, got -1"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
])
def test_bad_numbers_for_every_family(family, flags, message, run_cli, tmp_path):
    status, _, err = run_cli("train", family, *TINY, *FAMILY[family], *flags, "--out", tmp_path / "o")
    assert_one_line_error(status, err, message)
    assert not (tmp_path / "o").exists()


def test_latent_dim_zero_for_the_gan(run_cli, tmp_path):
    status, _, err = run_cli("train", "gan", *TINY, *FAMILY["gan"], "--latent-dim", "0", "--out", tmp_path / "o")
    assert_one_line_error(status, err, "latent_dim must be at least 1, got 0")


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:300]),
     "model.safetensors is not a readable safetensors file"),
    (lambda d: (d / "config.json").write_text("{truncated"), "config.json is not valid JSON"),
    (lambda d: ((d / "config.json").unlink(), save_file(load_file(d / "model.safetensors"), d / "model.safetensors")),
     "config.json is missing"),  # weights that carry their config load without it (test_run_folder_safety.py)
    (lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()),
                                                          "family": "flow"})),
     "unknown family 'flow'; known families: vae, gan, ddpm"),
])
def test_sampling_a_damaged_model_folder(run, damage, message, run_cli, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    damage(broken)
    status, _, err = run_cli("sample", broken, "-n", "1", "-o", tmp_path / "pics")
    assert_one_line_error(status, err, message)


def _config(d):
    return json.loads((d / "config.json").read_text())


@pytest.mark.parametrize("damage, message", [
    (lambda d: [(c / "optimizer.safetensors").unlink() for c in (d / "checkpoints").iterdir()],
     "no readable checkpoint in"),
    (lambda d: [(c / "state.json").write_text("garbage") for c in (d / "checkpoints").iterdir()],
     "state.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text("{truncated"), "config.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text(json.dumps({**_config(d), "family": "flow"})),
     "unknown family 'flow'"),
    (lambda d: (d / "config.json").write_text(json.dumps({**_config(d), "colour": 1})),
     "unknown key 'colour'; allowed keys: genpix, family, model"),
    (lambda d: (d / "config.json").write_text(json.dumps({k: v for k, v in _config(d).items() if k != "model"})),
     "'model' must be an object"),
])
def test_resuming_a_damaged_run(run, damage, message, run_cli, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    damage(broken)
    before = sorted(p.name for p in (broken / "checkpoints").iterdir())
    status, _, err = run_cli("train", "vae", "--out", broken, "--resume", "--steps", "4", "--quiet")
    assert_one_line_error(status, err, message)
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == before


def test_resuming_a_run_of_another_family(run, run_cli):
    status, _, err = run_cli("train", "gan", "--out", run, "--resume", "--steps", "4", "--quiet")
    assert_one_line_error(status, err, f"--resume: {run} holds a vae run, not gan")


@pytest.mark.parametrize("family, config, message", [
    ("vae", {"train": {"optimizer": "sgd"}}, "train: unknown key 'optimizer'; allowed keys: batch_size"),
    ("gan", {"model": {"depth": 3}}, "model: unknown key 'depth'; allowed keys: channels, cond"),
    ("gan", {"model": {"loss": "wgan"}}, "model.loss: 'wgan' is not one of 'non_saturating', 'minimax'"),
    ("gan", {"model": {"stabiliser": "dropout"}},
     "model.stabiliser: 'dropout' is not one of 'none', 'label_smoothing', 'r1', 'spectral_norm'"),
    ("vae", {"vae": {}}, "expected an object with 'model' and/or 'train' sections"),
])
def test_bad_config_files(family, config, message, run_cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    status, _, err = run_cli("train", family, *TINY, *FAMILY[family], "--config", path, "--out", tmp_path / "o")
    assert_one_line_error(status, err, message)
    assert not (tmp_path / "o").exists()
