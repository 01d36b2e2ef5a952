"""Tiled upscaling, sd-webui's upscale sizes and latent modes, the named-upscaler registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genpix.errors import GenpixError
from genpix.io.upscaler_file import save_upscaler
from genpix.models.rrdbnet import RRDBNet, RRDBNetConfig
from genpix.models.srvgg import SRVGGNetCompact, SRVGGNetConfig
from genpix.pipelines.tiling import TileConfig, tile_starts, tiled_apply
from genpix.pipelines.upscale import LATENT_UPSCALE_MODES, Upscaler, upscale_image, upscale_latent
from genpix.pipelines.upscalers import UpscalerRegistry


def _srvgg(scale=2, num_conv=1, channels=3, seed=0):
    torch.manual_seed(seed)
    net = SRVGGNetCompact(SRVGGNetConfig(scale=scale, channels=channels, num_features=8, num_conv=num_conv))
    return net.eval().requires_grad_(False)


def _rrdb(scale=4, seed=0):
    torch.manual_seed(seed)
    net = RRDBNet(RRDBNetConfig(scale=scale, channels=3, num_features=8, num_blocks=1, growth_channels=4))
    return net.eval().requires_grad_(False)


def _picture(w=30, h=20, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def test_tile_starts_follow_sd_webui_split_grid():
    # cols = ceil((w - ov) / (tile - ov)), x = int(col * (w - tile) / (cols - 1))
    assert tile_starts(500, 192, 8) == [0, 154, 308]
    assert tile_starts(100, 192, 8) == [0]
    assert tile_starts(70, 24, 16) == [int(k * 46 / 6) for k in range(7)]


def test_tiled_equals_untiled_when_overlap_covers_the_receptive_field():
    """SRVGG with 1 hidden conv: receptive radius 3 input px = 6 output px at x2, under a quarter of the
    32-px output overlap: tiling changes nothing beyond float rounding (tolerance 1e-5)."""
    net = _srvgg(scale=2, num_conv=1)
    x = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    full = net(x)
    tiled = tiled_apply(net, x, 2, TileConfig(tile=24, overlap=16))
    assert tiled.shape == full.shape
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_tiled_rrdbnet_close_to_untiled():
    """RRDBNet (one block) at x4, tile 32: with overlap 16 the tiles agree with the whole picture to
    1e-4 (measured 1.4e-6 max); with overlap 8 to 5e-3 (measured 8e-4); without overlap the seams
    show (measured 0.05 max)."""
    net = _rrdb()
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    full = net(x)
    errors = {ov: (tiled_apply(net, x, 4, TileConfig(tile=32, overlap=ov)) - full).abs().max().item()
              for ov in (0, 8, 16)}
    assert errors[16] < 1e-4 and errors[8] < 5e-3 and errors[0] > 0.01


def test_tile_config_checks():
    for bad in (dict(tile=8), dict(overlap=-1), dict(tile=32, overlap=32)):
        with pytest.raises(GenpixError):
            TileConfig(**bad)


def test_plain_upscalers_sizes_like_sd_webui():
    image = _picture(30, 20)
    assert Upscaler("Lanczos").upscale(image, 4).size == (120, 80)
    assert Upscaler("Nearest").upscale(image, 2.5).size == (72, 48)  # (w * s) // 8 * 8
    nearest = Upscaler("Nearest").upscale(image, 4)
    assert np.array_equal(np.asarray(nearest)[::4, ::4], np.asarray(image))
    assert Upscaler("Lanczos").upscale(_picture(3, 2), 2).size == (8, 8)  # never below 8 pixels
    none = Upscaler("None").upscale(image, 4)
    assert np.array_equal(np.asarray(none), np.asarray(image.resize((120, 80), Image.Resampling.LANCZOS)))


def test_model_upscaler_feeds_bgr_and_rounds():
    net = _rrdb()
    image = _picture(20, 12)
    up = Upscaler("mine", net, _spec(net), TileConfig(tile=0)).upscale(image, 4)
    assert up.size == (80, 48)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).flip(0)[None]
    expected = (net(x).clamp(0, 1)[0] * 255).round().to(torch.uint8).flip(0).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(up), expected)


def test_one_channel_model_on_colour_and_gray():
    net = _srvgg(scale=2, channels=1)
    upscaler = Upscaler("gray", net, _spec(net), TileConfig(tile=0))
    gray = upscaler.upscale(_picture(16, 16, "L"), 2)
    assert gray.mode == "L" and gray.size == (32, 32)
    colour = upscaler.upscale(_picture(16, 16), 2)
    assert colour.mode == "RGB" and colour.size == (32, 32)


def test_model_runs_until_the_target_then_lanczos():
    net = _srvgg(scale=2)
    image = _picture(16, 16)
    calls = []
    upscaler = Upscaler("x2", lambda x: calls.append(x.shape) or net(x), _spec(net), TileConfig(tile=0))
    assert upscaler.upscale(image, 3).size == (48, 48)  # x2 twice (16 -> 32 -> 64), Lanczos to 48
    assert len(calls) == 2


def test_upscale_image_to_exact_size():
    image = _picture(30, 20)
    out = upscale_image(image, Upscaler("Lanczos"), size=(101, 70))
    assert out.size == (101, 70)
    with pytest.raises(GenpixError, match="exactly one"):
        upscale_image(image, Upscaler("Lanczos"))


@pytest.mark.parametrize("call,message", [
    (lambda im: Upscaler("Lanczos").upscale(im, 0.5), "between 1"),
    (lambda im: Upscaler("Lanczos", limit=10_000).upscale(im, 8), "limit"),
    (lambda im: upscale_image(im, Upscaler("Nearest"), size=(100_000, 100_000)), "limit"),
    (lambda im: upscale_image(im, Upscaler("Nearest"), size=(4000, 10)), "factor"),
    (lambda im: Upscaler("bogus"), "not a plain upscaler"),
])
def test_bad_upscales(call, message):
    with pytest.raises(GenpixError, match=message) as info:
        call(_picture(30, 20))
    assert "\n" not in str(info.value)


def test_one_x_model_refuses_to_enlarge():
    net = RRDBNet(RRDBNetConfig(scale=1, channels=3, num_features=8, num_blocks=1, growth_channels=4, unshuffle=4))
    with pytest.raises(GenpixError, match="1x model"):
        Upscaler("restore", net, _spec(net)).upscale(_picture(), 2)


@pytest.mark.parametrize("mode", list(LATENT_UPSCALE_MODES))
def test_latent_modes_are_sd_webui_interpolations(mode):
    latent = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    got = upscale_latent(latent, mode, 16, 24)
    interpolation, antialias = {"Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
                                "Latent (bicubic)": ("bicubic", False),
                                "Latent (bicubic antialiased)": ("bicubic", True),
                                "Latent (nearest)": ("nearest", False),
                                "Latent (nearest-exact)": ("nearest-exact", False)}[mode]
    assert torch.equal(got, F.interpolate(latent, size=(16, 24), mode=interpolation, antialias=antialias))


def test_latent_mode_unknown():
    with pytest.raises(GenpixError, match="Latent \\(bicubic\\)"):
        upscale_latent(torch.zeros(1, 4, 8, 8), "Latent (cubic)", 16, 16)


def test_registry_lists_files_by_stem(tmp_path):
    save_upscaler(_rrdb(), tmp_path / "4x_Mine.pth")
    (tmp_path / "sub").mkdir()
    save_upscaler(_srvgg(scale=2), tmp_path / "sub" / "compact-x2.safetensors")
    (tmp_path / "broken.pth").write_bytes(b"nothing")
    (tmp_path / "notes.txt").write_text("ignored")
    registry = UpscalerRegistry(tmp_path, tile=TileConfig(tile=0))
    with pytest.warns(UserWarning, match="broken.pth"):
        entries = registry.entries()
    assert [e.name for e in entries] == ["None", "Lanczos", "Nearest", "4x_Mine", "compact-x2"]
    assert entries[3].describe() == {"name": "4x_Mine", "model_name": "ESRGAN",
                                     "model_path": str(tmp_path / "4x_Mine.pth"), "model_url": None, "scale": 4}
    assert entries[4].scale == 2 and entries[0].describe()["model_path"] is None
    up = registry.get("compact-x2")
    assert up is registry.get("compact-x2")  # the network stays loaded
    assert up.upscale(_picture(16, 8), 2).size == (32, 16)
    with pytest.raises(GenpixError, match="unknown upscaler 'nope'.*4x_Mine"):
        registry.get("nope")
    assert [e.name for e in UpscalerRegistry(tmp_path / "missing").entries()] == ["None", "Lanczos", "Nearest"]


def _spec(net):
    from genpix.io.upscaler_file import UpscalerSpec

    return UpscalerSpec("ESRGAN" if isinstance(net, RRDBNet) else "SRVGGNetCompact", net.config)
