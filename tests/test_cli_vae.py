"""The VAE family end to end through the ``genpix`` command, at tiny sizes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genpix.io.images import parse_infotext, read_infotext

TINY = ["--data", "digits", "--image-size", "16", "--limit", "256", "--batch-size", "32",
        "--widths", "8,16", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from genpix.cli import main

    out = tmp_path_factory.mktemp("run") / "vae"
    assert main(["train", "vae", *TINY, "--steps", "30", "--sample-every", "10", "--out", str(out)]) == 0
    return out


def test_training_writes_logs_pictures_checkpoints_and_metrics(model):
    config = json.loads((model / "config.json").read_text())
    assert config["family"] == "vae" and config["step"] == 30
    assert config["data"]["spec"] == "digits" and config["model"]["latent_dim"] == 2
    lines = [json.loads(x) for x in (model / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 31))
    assert {"loss", "reconstruction", "kl", "images_per_s"} <= set(lines[0])
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert {p.name for p in (model / "samples").iterdir()} >= {"samples-00000010.png",
                                                               "reconstructions-00000030.png"}
    assert [p.name for p in (model / "checkpoints").iterdir()] == ["step-00000030"]
    metrics = json.loads((model / "metrics.json").read_text())
    assert 5 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1


def test_sample_writes_pngs_with_infotext_npy_and_grid(model, tmp_path, run_cli):
    status, out, err = run_cli("sample", model, "-n", "5", "--seed", "7", "-o", tmp_path / "png",
                               "--npy", tmp_path / "x.npy", "--grid", tmp_path / "grid.png")
    assert status == 0, err
    files = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert files == [f"{i:05d}.png" for i in range(5)]
    fields = parse_infotext(read_infotext(tmp_path / "png" / "00002.png"))
    assert fields["Seed"] == "9" and fields["Size"] == "16x16" and fields["Family"] == "vae"
    array = np.load(tmp_path / "x.npy")
    assert array.shape == (5, 16, 16, 1) and array.dtype == np.uint8
    assert np.array_equal(array[2, ..., 0], np.asarray(Image.open(tmp_path / "png" / "00002.png")))
    assert Image.open(tmp_path / "grid.png").size[0] > 16 * 2
    # image i depends on seed + i only: seed 9 alone reproduces image 2
    run_cli("sample", model, "-n", "1", "--seed", "9", "--npy", tmp_path / "one.npy")
    assert np.array_equal(np.load(tmp_path / "one.npy")[0], array[2])
    # a second run into the same folder continues the numbering, overwriting nothing
    run_cli("sample", model, "-n", "2", "-o", tmp_path / "png")
    assert len(list((tmp_path / "png").iterdir())) == 7


def test_latent_grid_2d_and_pca(model, tmp_path, run_cli):
    status, _, err = run_cli("latent-grid", model, "-o", tmp_path / "g.png", "--size", "10")
    assert status == 0, err
    picture = Image.open(tmp_path / "g.png")
    assert picture.width >= 10 * 16 and picture.height >= 10 * 16
    status, _, err = run_cli("latent-grid", model, "-o", tmp_path / "p.png", "--size", "5", "--dims", "pca")
    assert status == 0, err
    status, _, err = run_cli("latent-grid", model, "-o", tmp_path / "p.png", "--dims", "0,7")
    assert status == 1 and "need two different dimensions below 2" in err


def test_interpolate_between_images_and_seeds(model, tmp_path, run_cli):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("L", (40, 30), 0).save(a)
    Image.new("RGB", (20, 20), (255, 255, 255)).save(b)
    status, _, err = run_cli("interpolate", model, "--from", a, "--to", b, "--frames", "6",
                             "--mode", "both", "-o", tmp_path / "walk.png")
    assert status == 0, err
    strip = Image.open(tmp_path / "walk.png")
    assert strip.width > 6 * 16 and strip.height > 2 * 16 and strip.height < 3 * 16 + 8
    gif = Image.open(tmp_path / "walk.gif")
    assert gif.is_animated and gif.n_frames == 2 * 6 - 2
    status, _, err = run_cli("interpolate", model, "--from", "1", "--to", "2", "-o", tmp_path / "s.png")
    assert status == 0, err


def test_reconstruct_prints_psnr_and_ssim(model, tmp_path, run_cli):
    status, out, err = run_cli("reconstruct", model, "-n", "50", "-o", tmp_path / "r.png")
    assert status == 0, err
    assert "PSNR" in out and "SSIM" in out and (tmp_path / "r.png").is_file()


def test_python_api(model):
    import genpix

    pipe = genpix.load_pipeline(str(model))
    out = pipe(n=3, seed=1)
    assert len(out.images) == 3 and out.images[0].size == (16, 16) and out.info["seeds"] == [1, 2, 3]


def test_datasets_and_models_list(run_cli):
    status, out, _ = run_cli("datasets")
    assert status == 0 and all(name in out for name in ("fashion-mnist", "mnist", "digits", "FOLDER"))
    assert run_cli("models")[0] == 0


@pytest.mark.parametrize("args,message", [
    (["train", "vae", *TINY, "--latent-dim", "0"], "latent_dim must be at least 1"),
    (["train", "vae", *TINY, "--steps", "-1"], "--steps must be at least 1"),
    (["train", "vae", *TINY, "--batch-size", "0"], "--batch-size must be at least 1"),
    (["train", "vae", "--data", "no-such-dataset"], "no-such-dataset"),
    (["sample", "no-such-model"], "no model folder or bundled model named 'no-such-model'"),
    (["sample", "fashion-vae-nope", "-n", "0"], "must be at least 1"),
])
def test_bad_arguments_give_one_line_and_non_zero(args, message, run_cli, tmp_path):
    status, out, err = run_cli(*args, *(["--out", tmp_path / "o"] if args[0] == "train" else []))
    assert status != 0
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_damaged_model_folder(model, tmp_path, run_cli):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "model.safetensors").unlink()
    status, _, err = run_cli("sample", broken)
    assert status == 1 and "model.safetensors is missing" in err
    shutil.copy(model / "model.safetensors", broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "depth": 3}}))
    status, _, err = run_cli("sample", broken, "-o", tmp_path / "out")
    # the weights carry the config they were written with: a config.json that does not match them is not used
    assert status == 0 and "does not belong to the weights beside it" in err


def test_real_process_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "genpix", "train", "vae", "--data", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("genpix: error:")


def test_train_on_a_folder_of_one_image(tmp_path, run_cli):
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (50, 40), (200, 10, 10)).save(folder / "a.png")
    status, _, err = run_cli("train", "vae", "--data", folder, "--image-size", "16", "--widths", "8,16",
                             "--steps", "2", "--quiet", "--out", tmp_path / "run")
    assert status == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["channels"] == 3


def test_folder_with_unreadable_files_warns_once(tmp_path, run_cli):
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (20, 20), 60 * i).save(folder / f"{i}.png")
    (folder / "notes.png").write_text("not an image")
    status, _, err = run_cli("train", "vae", "--data", folder, "--image-size", "16", "--widths", "8,16",
                             "--steps", "2", "--quiet", "--out", tmp_path / "run")
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("genpix: warning:")]
    assert len(warnings) == 1 and "notes.png" in warnings[0]
