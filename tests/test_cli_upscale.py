"""genpix upscale: sd-webui's Extras from the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from genpix.cli import main
from genpix.io.upscaler_file import save_upscaler
from genpix.models.srvgg import SRVGGNetCompact, SRVGGNetConfig
from genpix.pipelines.extras import ExtrasConfig, run_extras
from genpix.pipelines.upscalers import UpscalerRegistry


@pytest.fixture()
def folder(tmp_path):
    torch.manual_seed(0)
    models = tmp_path / "models"
    save_upscaler(SRVGGNetCompact(SRVGGNetConfig(scale=2, channels=3, num_features=8, num_conv=1)),
                  models / "compact-x2.safetensors")
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a cat\nSteps: 20, Seed: 1")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png", pnginfo=meta)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(tmp_path / "b.png")
    return tmp_path


def test_upscale_with_a_model_keeps_parameters(folder, capsys):
    out = folder / "out"
    assert main(["upscale", str(folder / "a.png"), str(folder / "b.png"), "--upscaler", "compact-x2",
                 "--scale", "4", "--upscalers-dir", str(folder / "models"), "-o", str(out),
                 "--device", "cpu"]) == 0
    with Image.open(out / "a.png") as a:
        assert a.size == (120, 80)
        assert a.info["parameters"] == "a cat\nSteps: 20, Seed: 1"
        assert a.info["postprocessing"] == "Postprocess upscale by: 4, Postprocess upscaler: compact-x2"
    with Image.open(out / "b.png") as b:
        assert b.size == (64, 64)
    assert "compact-x2" in capsys.readouterr().out


def test_upscale_to_size_with_crop_and_second_upscaler(folder):
    registry = UpscalerRegistry(folder / "models")
    with Image.open(folder / "a.png") as image:
        image.load()
        out, info = run_extras(image, registry, ExtrasConfig(
            upscaler_1="Lanczos", upscaler_2="Nearest", upscaler_2_visibility=0.5, resize_mode=1,
            width=64, height=64))
    assert out.size == (64, 64)
    assert info == ("Postprocess upscale to: 64x64, Postprocess crop to: 64x64, Postprocess upscaler: Lanczos, "
                    "Postprocess upscaler 2: Nearest")
    untouched, info = run_extras(image, registry, ExtrasConfig())
    assert untouched.size == image.size and info == ""


def test_one_png_name(folder):
    target = folder / "single.png"
    assert main(["upscale", str(folder / "a.png"), "--scale", "2", "-o", str(target)]) == 0
    assert Image.open(target).size == (56, 40)  # (30 * 2) // 8 * 8, (20 * 2) // 8 * 8, as sd-webui


@pytest.mark.parametrize("extra,message", [
    (["--upscaler", "nope"], "unknown upscaler 'nope'"),
    (["--scale", "0.5"], "between 1"),
    (["--scale", "16", "--width", "9000"], "--width and --height"),
    (["--width", "100000", "--height", "100000"], "limit"),
])
def test_bad_input_is_one_line(folder, capsys, extra, message):
    assert main(["upscale", str(folder / "a.png"), "-o", str(folder / "o"),
                 "--upscalers-dir", str(folder / "models"), *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unreadable_picture(folder, capsys):
    (folder / "x.png").write_bytes(b"nope")
    assert main(["upscale", str(folder / "x.png"), "-o", str(folder / "o")]) == 1
    assert "not a readable picture" in capsys.readouterr().err
    assert main(["upscale", str(folder / "missing.png")]) == 1
