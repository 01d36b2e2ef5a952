"""``genpix eval`` and ``genpix eval train-features`` end to end on Fashion-MNIST, at small sizes.

The domain feature network goes to genpix's cache; XDG_CACHE_HOME points at a temporary folder so
the user's cache is never touched.
"""

import json

import numpy as np
import pytest

from genpix.data import load_dataset

KEYS = {"fid", "kid", "kid_std", "precision", "recall", "inception_score", "class_coverage", "class_entropy",
        "features", "note", "n_real", "n_fake", "notes"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private genpix cache with Fashion-MNIST domain features made by `genpix eval train-features`."""
    from genpix.cli import main

    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root))
        assert main(["eval", "train-features", "--data", "fashion-mnist", "--steps", "30", "--batch-size", "64",
                     "--device", "cpu"]) == 0
        yield root


@pytest.fixture(scope="module")
def vae_model(tmp_path_factory):
    from genpix.cli import main

    out = tmp_path_factory.mktemp("run") / "vae"
    assert main(["train", "vae", "--data", "fashion-mnist", "--limit", "256", "--batch-size", "32", "--widths", "8,16",
                 "--steps", "5", "--sample-every", "5", "--checkpoint-every", "5", "--quiet", "--device", "cpu",
                 "--out", str(out)]) == 0
    return out


def write_npy(path, images: np.ndarray):
    np.save(path, images)
    return path


@pytest.fixture(scope="module")
def fake_npy(tmp_path_factory):
    """500 noisy Fashion-MNIST training images as `genpix sample --npy` writes them: uint8 (N, H, W, 1)."""
    images = load_dataset("fashion-mnist", split="train", limit=500).images.permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(0)
    noisy = np.clip(images + rng.normal(0, 30, images.shape), 0, 255).astype(np.uint8)
    return write_npy(tmp_path_factory.mktemp("npy") / "fake.npy", noisy)


def test_train_features_writes_a_network_and_its_description(cache, run_cli):
    path = cache / "genpix" / "features" / "fashion-mnist.safetensors"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert path.is_file() and meta["kind"] == "genpix-domain-features"
    assert meta["note"] == "domain features, not comparable to Inception FID"
    assert meta["train"]["steps"] == 30 and meta["data"]["train_images"] == 60000
    assert len(meta["class_names"]) == 10 and 0.2 < meta["test_accuracy"] <= 1  # 30 steps: above chance (0.1)
    status, out, err = run_cli("eval", "train-features", "--help")
    assert status == 0 and "--steps" in out and "not comparable to Inception FID" in " ".join(out.split())


def test_eval_npy_against_the_test_split_writes_json(cache, fake_npy, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    status, out, err = run_cli("eval", "--real", "fashion-mnist:test", "--fake", fake_npy, "-n", "500",
                               "--kid-subsets", "20", "--json", tmp_path / "out.json", "--device", "cpu")
    assert status == 0, err
    figures = json.loads((tmp_path / "out.json").read_text())
    assert KEYS <= set(figures)
    assert figures["n_real"] == figures["n_fake"] == 500 and figures["feature_dim"] == 128
    for key in ("fid", "kid", "precision", "recall", "inception_score", "class_coverage"):
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["precision"] <= 1 and figures["recall"] <= 1 and figures["kid_subsets"] == 20
    assert figures["features"] == "domain:fashion-mnist.safetensors (fashion-mnist)"
    assert "Fréchet distance" in out and "not comparable to Inception FID" in out and "wrote" in out
    # the same images against themselves: the distance is (almost) nothing next to the noisy ones'
    status, _, err = run_cli("eval", "--real", fake_npy, "--fake", fake_npy, "--features", "domain:"
                             + str(cache / "genpix" / "features" / "fashion-mnist.safetensors"),
                             "--json", tmp_path / "self.json", "--kid-subsets", "2")
    assert status == 0, err
    itself = json.loads((tmp_path / "self.json").read_text())
    assert itself["fid"] < 1e-6 * figures["fid"] and itself["precision"] == itself["recall"] == 1.0


def test_eval_samples_a_model_folder_itself(cache, vae_model, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    status, out, err = run_cli("eval", "--real", "fashion-mnist:test", "--fake", vae_model, "-n", "60",
                               "--kid-subsets", "5", "--seed", "3", "--json", tmp_path / "vae.json")
    assert status == 0, err
    figures = json.loads((tmp_path / "vae.json").read_text())
    assert figures["n_fake"] == 60 and figures["fake"] == str(vae_model)
    assert figures["fake_source"] == {"source": "model", "seed": 3}
    assert figures["fid"] > 0 and 0 <= figures["precision"] <= 1 and 0 <= figures["recall"] <= 1


def test_mixed_channels_and_sizes_are_converted_and_noted(cache, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    rgb = write_npy(tmp_path / "rgb.npy", np.random.default_rng(1).integers(0, 256, (40, 32, 32, 3), np.uint8))
    status, out, err = run_cli("eval", "--real", "fashion-mnist:test", "--fake", rgb, "-n", "40",
                               "--kid-subsets", "2", "--json", tmp_path / "mixed.json")
    assert status == 0, err
    notes = json.loads((tmp_path / "mixed.json").read_text())["notes"]
    assert "generated images converted from RGB to grayscale (the feature network's input)" in notes
    assert "generated images resized from 32x32 to 28x28 (the feature network's input)" in notes
    assert "note: generated images resized from 32x32 to 28x28" in out


@pytest.mark.parametrize("args, message", [
    (["--fake", "ONE"], "need at least 2 generated images to compare distributions, got 1 from one.npy"),
    (["--fake", "EMPTY"], "need at least 2 generated images to compare distributions, got 0"),
    (["--fake", "MISSING.npy"], "does not exist"),
    (["--fake", "nothing-here"], "'nothing-here' is not a dataset (fashion-mnist, mnist"),
    (["--fake", "ONE", "--features", "inception", "--inception-weights", "MISSING.pth"],
     "no Inception weights at MISSING.pth: pass --inception-weights PATH to pytorch-fid's "
     "pt_inception-2015-12-05-6726825d.pth"),
    (["--fake", "ONE", "--features", "vgg"], "unknown --features 'vgg'; choose one of: inception, domain, "
                                            "domain:FILE, torchscript:PATH"),
    (["--fake", "ONE", "--features", "torchscript:MISSING.pt"], "pass --features torchscript:PATH"),
])
def test_bad_inputs_are_one_line_errors(cache, tmp_path, run_cli, monkeypatch, args, message):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    write_npy(tmp_path / "one.npy", np.zeros((1, 28, 28), np.uint8))
    write_npy(tmp_path / "empty.npy", np.zeros((0, 28, 28, 1), np.uint8))
    names = {"ONE": "one.npy", "EMPTY": "empty.npy", "MISSING.npy": "missing.npy", "MISSING.pth": "missing.pth",
             "torchscript:MISSING.pt": f"torchscript:{tmp_path}/missing.pt"}
    args = [names[a] if a in names and a.startswith("torchscript") else
            str(tmp_path / names[a]) if a in names else a for a in args]
    message = message.replace("MISSING.pth", str(tmp_path / "missing.pth"))
    status, out, err = run_cli("eval", "--real", "fashion-mnist:test", "-n", "50", *args)
    assert status == 1 and err.count("\n") == 1 and err.startswith("genpix: error: "), err
    assert message in err


def test_domain_features_not_trained_yet_says_what_to_run(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    status, _, err = run_cli("eval", "--real", "digits:test", "--fake", "digits:train", "-n", "20")
    assert status == 1
    assert "no domain feature network for digits yet: run `genpix eval train-features --data digits`" in err
    status, _, err = run_cli("eval", "--real", "digits:test")
    assert status == 1 and "genpix eval needs --real SPEC and --fake SPEC" in err


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning",
                            "ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_user_torchscript_features_and_default_folder_network_path(tmp_path, run_cli, monkeypatch):
    import torch

    from genpix.eval.features import default_domain_path

    class MeanStd(torch.nn.Module):  # (B, C, H, W) -> (B, 2C) features
        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1)

    torch.jit.save(torch.jit.script(MeanStd()), str(tmp_path / "meanstd.pt"))
    rgb = write_npy(tmp_path / "rgb.npy", np.random.default_rng(2).integers(0, 256, (30, 28, 28, 3), np.uint8))
    status, out, err = run_cli("eval", "--real", "fashion-mnist:test", "--fake", rgb, "-n", "30", "--features",
                               f"torchscript:{tmp_path / 'meanstd.pt'}", "--kid-subsets", "2",
                               "--json", tmp_path / "ts.json")
    assert status == 0, err
    figures = json.loads((tmp_path / "ts.json").read_text())
    assert figures["features"] == "torchscript:meanstd.pt" and figures["feature_dim"] == 6
    assert "real images converted from grayscale to RGB (the feature network's input)" in figures["notes"]
    assert figures["fid"] > 0 and figures["inception_score"] is None  # no logits: no IS, no coverage
    # a folder's default domain network is named by its absolute path, however it was written
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    assert default_domain_path("photos") == default_domain_path(str(tmp_path / "photos"))
    assert default_domain_path("fashion-mnist").name == "fashion-mnist.safetensors"
