"""The GAN family end to end through the ``genpix`` command and genpix.load_pipeline, at tiny sizes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import genpix
from genpix.io.images import parse_infotext, read_infotext

TINY = ["--data", "digits", "--image-size", "16", "--limit", "256", "--batch-size", "32",
        "--width", "8", "--latent-dim", "8", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def cond_model(tmp_path_factory):
    from genpix.cli import main

    out = tmp_path_factory.mktemp("run") / "gan"
    assert main(["train", "gan", *TINY, "--cond", "class", "--steps", "20", "--sample-every", "10",
                 "--diagnostics-every", "10", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    from genpix.cli import main

    out = tmp_path_factory.mktemp("run") / "gan"
    assert main(["train", "gan", *TINY, "--steps", "4", "--stabiliser", "label_smoothing",
                 "--out", str(out)]) == 0
    return out


def test_training_logs_losses_grids_diagnostics_and_checkpoints(cond_model):
    config = json.loads((cond_model / "config.json").read_text())
    assert config["family"] == "gan" and config["step"] == 20
    assert config["model"]["cond"] == "class" and config["model"]["num_classes"] == 10
    assert config["train"]["lr"] == 2e-4
    lines = [json.loads(x) for x in (cond_model / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 21))
    assert {"d_loss", "g_loss", "d_real", "d_fake", "images_per_s"} <= set(lines[0])
    assert {p.name for p in (cond_model / "samples").iterdir()} == {"samples-00000010.png",
                                                                    "samples-00000020.png"}
    grid = Image.open(cond_model / "samples" / "samples-00000020.png")
    assert grid.width == 10 * 18 + 2  # one column per class
    diagnostics = [json.loads(x) for x in (cond_model / "diagnostics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in diagnostics] == [10, 20]
    assert len(diagnostics[0]["class_histogram"]) == 10 and sum(diagnostics[0]["class_histogram"]) == 256
    assert 0 <= diagnostics[0]["diversity_ratio"] and diagnostics[0]["real_pairwise_distance"] > 1
    assert (cond_model / "diagnostics" / "classifier.safetensors").is_file()
    weights = load_file(cond_model / "model.safetensors")
    assert any(k.startswith("generator.embed") for k in weights)
    assert any(k.startswith("discriminator.embed") for k in weights)


def test_sample_a_named_class(cond_model, tmp_path, run_cli):
    status, _, err = run_cli("sample", cond_model, "-n", "3", "--seed", "4", "--class", "7",
                             "-o", tmp_path / "png", "--npy", tmp_path / "x.npy")
    assert status == 0, err
    fields = parse_infotext(read_infotext(tmp_path / "png" / "00001.png"))
    assert fields["Class"] == "7" and fields["Family"] == "gan" and fields["Seed"] == "5"
    array = np.load(tmp_path / "x.npy")
    assert array.shape == (3, 16, 16, 1) and array.dtype == np.uint8
    status, _, err = run_cli("sample", cond_model, "--class", "ankle boot")
    assert status == 1 and "unknown class 'ankle boot'; this model knows: 0, 1, 2" in err


def test_load_pipeline_maps_tanh_to_unit_range_and_depends_on_seed_only(cond_model, plain_model):
    pipe = genpix.load_pipeline(str(cond_model))
    out = pipe(n=4, seed=10)
    assert out.tensors.shape == (4, 1, 16, 16) and 0 <= out.tensors.min() and out.tensors.max() <= 1
    assert [parse_infotext(t)["Class"] for t in out.infotexts] == ["0", "1", "2", "3"]  # seed mod 10
    assert torch.equal(pipe(n=1, seed=12).tensors[0], out.tensors[2])
    with torch.no_grad():  # value_range: (G(z) + 1) / 2
        generator = pipe.decode
        z = torch.randn(2, 8)
        raw = generator(z, torch.tensor([3, 3]))
    assert torch.allclose(pipe.decode_latents(z, torch.tensor([3, 3])), (raw + 1) / 2)
    plain = genpix.load_pipeline(str(plain_model))
    assert plain(n=2).tensors.shape == (2, 1, 16, 16)
    with pytest.raises(genpix.errors.GenpixError, match="not class-conditional"):
        plain(n=1, class_name="3")


def test_latent_grid_random_directions_or_chosen_dims(cond_model, tmp_path, run_cli):
    status, _, err = run_cli("latent-grid", cond_model, "-o", tmp_path / "g.png", "--size", "4",
                             "--class", "2")
    assert status == 0, err
    picture = Image.open(tmp_path / "g.png")
    assert picture.width >= 4 * 16 and picture.height >= 4 * 16
    status, _, err = run_cli("latent-grid", cond_model, "-o", tmp_path / "d.png", "--size", "3",
                             "--dims", "2,5", "--range", "2")
    assert status == 0, err
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "d.png")), np.asarray(picture))
    status, _, err = run_cli("latent-grid", cond_model, "--dims", "pca", "-o", tmp_path / "p.png")
    assert status == 1 and "--dims pca needs a model with an encoder" in err


def test_interpolate_between_seeds_not_images(plain_model, tmp_path, run_cli):
    status, _, err = run_cli("interpolate", plain_model, "--from", "1", "--to", "2", "--frames", "5",
                             "--mode", "both", "-o", tmp_path / "walk.png")
    assert status == 0, err
    strip = Image.open(tmp_path / "walk.png")
    assert strip.width == 5 * 18 + 2 and strip.height == 2 * 18 + 2
    assert (tmp_path / "walk.gif").is_file()
    Image.new("L", (16, 16)).save(tmp_path / "a.png")
    status, _, err = run_cli("interpolate", plain_model, "--from", tmp_path / "a.png", "--to", "2",
                             "-o", tmp_path / "w.png")
    assert status == 1 and "cannot encode images" in err and "integer seeds" in err


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, run_cli):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = [*TINY, "--stabiliser", "spectral_norm", "--checkpoint-every", "3", "--diagnostics-every", "3"]
    assert run_cli("train", "gan", *args, "--steps", "6", "--out", straight)[0] == 0
    assert run_cli("train", "gan", *args, "--steps", "3", "--out", split)[0] == 0
    status, _, err = run_cli("train", "gan", "--out", split, "--resume", "--steps", "6", "--quiet",
                             "--diagnostics-every", "3")
    assert status == 0, err
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and any("parametrizations" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (split / "log.jsonl").read_text().count("\n") == 6
    steps = [json.loads(x)["step"] for x in (split / "diagnostics.jsonl").read_text().splitlines()]
    assert steps == [3, 6]
    status, _, err = run_cli("train", "gan", "--out", split, "--resume", "--loss", "minimax")
    assert status == 1 and "--loss minimax differs" in err


def test_bad_arguments_list_what_is_allowed(tmp_path, run_cli):
    status, _, err = run_cli("train", "gan", *TINY, "--loss", "wgan", "--out", tmp_path / "a")
    assert status == 2 and "choose from 'non_saturating', 'minimax'" in err
    status, _, err = run_cli("train", "gan", *TINY, "--stabiliser", "dropout", "--out", tmp_path / "a")
    assert status == 2 and "'none', 'label_smoothing', 'r1', 'spectral_norm'" in err
    args = [a if a != "16" else "24" for a in TINY]
    status, _, err = run_cli("train", "gan", *args, "--out", tmp_path / "a")
    assert status == 1 and "image_size 24 cannot be produced" in err and "16, 28, 32, 64" in err
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (16, 16), i * 60).save(folder / f"{i}.png")
    status, _, err = run_cli("train", "gan", *TINY[2:], "--data", folder, "--cond", "class", "--out", tmp_path / "b")
    assert status == 1 and "--cond class needs a dataset with class labels" in err
    assert len(err.strip().splitlines()) == 1


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, run_cli):
    out = tmp_path / "run"
    status, _, err = run_cli("train", "gan", *TINY, "--lr", "1e30", "--steps", "5", "--out", tmp_path / "nan")
    assert status == 1 and "became nan at step 1" in err and "none written yet" in err
    assert run_cli("train", "gan", *TINY, "--steps", "4", "--checkpoint-every", "2", "--out", out)[0] == 0
    good = load_file(out / "checkpoints" / "step-00000004" / "model.safetensors")
    status, _, err = run_cli("train", "gan", "--out", out, "--resume", "--steps", "8", "--lr", "1e30", "--quiet")
    assert status == 1 and "became nan at step 5" in err and "Last good checkpoint: step 4" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    latest = load_file(out / "model.safetensors")
    for key, tensor in good.items():
        assert torch.isfinite(tensor.float()).all() and torch.equal(latest[key], tensor), key
    assert json.loads((out / "config.json").read_text())["step"] == 4
