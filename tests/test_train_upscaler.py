"""genpix train upscaler: degradations, the task, the exported BasicSR-layout files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from genpix.cli import main
from genpix.data.degradations import DegradationConfig, degrade, gaussian_blur, jpeg
from genpix.errors import GenpixError
from genpix.io.checkpoint import read_model_dir
from genpix.io.upscaler_file import load_upscaler
from genpix.pipelines.upscalers import UpscalerRegistry
from genpix.training.upscaler import UpscalerConfig, build_network


def _draws(seed, n):
    g = torch.Generator().manual_seed(seed)
    return (lambda *s: torch.rand(n, *s, generator=g)), (lambda *s: torch.randn(n, *s, generator=g))


def test_bicubic_degradation_is_an_antialiased_downscale():
    hr = torch.rand(3, 1, 16, 16)
    lr = degrade(hr, 4, DegradationConfig(kind="bicubic"), *_draws(0, 3))
    expected = F.interpolate(hr, size=(4, 4), mode="bicubic", antialias=True).clamp(0, 1)
    assert torch.equal(lr, expected)


def test_real_degradation_is_seeded_and_degrades():
    hr = torch.rand(4, 3, 32, 32)
    config = DegradationConfig(kind="real", jpeg_quality_min=30)
    a, b = (degrade(hr, 2, config, *_draws(7, 4)) for _ in range(2))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a, degrade(hr, 2, config, *_draws(8, 4)))
    clean = degrade(hr, 2, DegradationConfig(kind="bicubic"), *_draws(7, 4))
    assert (a - clean).abs().mean() > 0.01 and 0 <= a.min() and a.max() <= 1


def test_gaussian_blur_per_picture():
    x = torch.zeros(2, 1, 17, 17)
    x[:, :, 8, 8] = 1
    y = gaussian_blur(x, torch.tensor([0.5, 2.0]), radius=4)
    torch.testing.assert_close(y.sum((1, 2, 3)), torch.ones(2))  # mass kept away from the borders
    t = torch.arange(-4, 5.0)
    k = torch.exp(-t**2 / (2 * 0.5**2))
    k = k / k.sum()
    torch.testing.assert_close(y[0, 0, 4:13, 4:13], torch.outer(k, k))  # separable, with its own sigma
    assert y[1, 0, 8, 8] < y[0, 0, 8, 8]


def test_jpeg_round_trip():
    x = torch.rand(2, 3, 16, 16)
    y = jpeg(x, [95, 10])
    assert y.shape == x.shape and (y[1] - x[1]).abs().mean() > (y[0] - x[0]).abs().mean()


@pytest.mark.parametrize("bad,message", [
    (dict(image_size=30, scale=4), "multiple of the scale"),
    (dict(jpeg_quality_min=99), "jpeg_quality_min"),
    (dict(num_features=0), "num_features"),
])
def test_bad_config(bad, message):
    with pytest.raises(GenpixError, match=message):
        UpscalerConfig(**bad)


@pytest.mark.parametrize("architecture,scale", [("compact", 2), ("rrdb", 4)])
def test_train_writes_files_the_loaders_read(tmp_path, architecture, scale):
    out = tmp_path / "run"
    assert main(["train", "upscaler", "--data", "digits", "--steps", "3", "--batch-size", "8", "--limit", "64",
                 "--out", str(out), "--quiet", "--device", "cpu", "--scale", str(scale),
                 "--architecture", architecture, "--num-features", "8", "--num-conv", "1", "--num-blocks", "1",
                 "--growth-channels", "4", "--checkpoint-every", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "images"}
    folder = read_model_dir(out)
    assert folder.family == "upscaler"
    trained = build_network(UpscalerConfig(**folder.config["model"]))
    trained.load_state_dict(folder.weights["upscaler"])
    x = torch.rand(1, 1, 8, 8)
    for suffix in (".pth", ".safetensors"):
        model, spec = load_upscaler(out / f"genpix-upscaler-x{scale}{suffix}")
        assert spec.scale == scale and spec.channels == 1 and spec.real_esrgan
        with torch.no_grad():
            torch.testing.assert_close(model(x), trained.eval()(x))
    model, spec = load_upscaler(out / "model.safetensors")  # the run's own weights, "upscaler." prefix
    torch.testing.assert_close(model(x), trained(x))
    with pytest.warns(UserWarning, match="optimizer.safetensors: unknown upscaler architecture"):
        names = [e.name for e in UpscalerRegistry(out).entries()]
    assert f"genpix-upscaler-x{scale}" in names and "model" in names


def test_train_refuses_pictures_the_scale_does_not_divide(tmp_path, capsys):
    assert main(["train", "upscaler", "--data", "digits", "--image-size", "30", "--steps", "1", "--out",
                 str(tmp_path / "r"), "--quiet", "--device", "cpu"]) == 1
    assert "multiple of the scale 4" in capsys.readouterr().err
