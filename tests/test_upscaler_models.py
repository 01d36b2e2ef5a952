"""ESRGAN RRDBNet and Real-ESRGAN SRVGGNetCompact against independent references written here from
the published architectures (ESRGAN Fig. 4 / BasicSR rrdbnet_arch; srvgg_arch), on random weights
in every key layout genpix reads; files written by genpix load back; bad files are refused."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from genpix.errors import GenpixError
from genpix.io.upscaler_file import inspect_state, load_upscaler, read_state_dict, save_upscaler
from genpix.models.rrdbnet import RRDBNet, RRDBNetConfig
from genpix.models.srvgg import SRVGGNetCompact, SRVGGNetConfig


# --- independent references on old-ESRGAN (model.N) state dicts -----------------------------------


def _conv(x, sd, name):
    return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)


def reference_esrgan(sd: dict, x: torch.Tensor, nb: int, n_up: int) -> torch.Tensor:
    """Old ESRGAN sequence: conv, ShortcutBlock(RRDB x nb, conv), (up2, conv, lrelu) x n_up,
    conv, lrelu, conv; RDB x5 * 0.2 + x, RRDB out * 0.2 + x (Wang et al. 2018)."""
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    fea = _conv(x, sd, "model.0")
    t = fea
    for b in range(nb):
        block_in = t
        for r in (1, 2, 3):
            feats = [t]
            for j in range(1, 5):
                feats.append(lrelu(_conv(torch.cat(feats, 1), sd, f"model.1.sub.{b}.RDB{r}.conv{j}.0")))
            t = _conv(torch.cat(feats, 1), sd, f"model.1.sub.{b}.RDB{r}.conv5.0") * 0.2 + t
        t = t * 0.2 + block_in
    fea = fea + _conv(t, sd, f"model.1.sub.{nb}")
    for k in range(1, n_up + 1):
        fea = lrelu(_conv(F.interpolate(fea, scale_factor=2, mode="nearest"), sd, f"model.{3 * k}"))
    return _conv(lrelu(_conv(fea, sd, f"model.{3 * n_up + 2}")), sd, f"model.{3 * n_up + 4}")


def random_old_esrgan(c_in: int, c_out: int, nf: int, gc: int, nb: int, n_up: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cin, cout):
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (1.0 / (cin * 9)) ** 0.5
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.05

    conv("model.0", c_in, nf)
    for b in range(nb):
        for r in (1, 2, 3):
            for j in range(1, 5):
                conv(f"model.1.sub.{b}.RDB{r}.conv{j}.0", nf + (j - 1) * gc, gc)
            conv(f"model.1.sub.{b}.RDB{r}.conv5.0", nf + 4 * gc, nf)
    conv(f"model.1.sub.{nb}", nf, nf)
    for k in range(1, n_up + 1):
        conv(f"model.{3 * k}", nf, nf)
    conv(f"model.{3 * n_up + 2}", nf, nf)
    conv(f"model.{3 * n_up + 4}", nf, c_out)
    return sd


def to_basicsr_keys(sd: dict, nb: int, n_up: int) -> dict:
    """The same weights under BasicSR's names, renamed here by hand (not by genpix's code)."""
    names = {"model.0": "conv_first", f"model.1.sub.{nb}": "conv_body",
             f"model.{3 * n_up + 2}": "conv_hr", f"model.{3 * n_up + 4}": "conv_last",
             **{f"model.{3 * k}": f"conv_up{k}" for k in range(1, n_up + 1)}}
    out = {}
    for key, v in sd.items():
        module, kind = key.rsplit(".", 1)
        if module.startswith("model.1.sub.") and ".RDB" in module:
            _, _, _, b, rdb, conv, _ = module.split(".")
            out[f"body.{b}.{rdb.lower()}.{conv}.{kind}"] = v
        else:
            out[f"{names[module]}.{kind}"] = v
    return out


def reference_srvgg(sd: dict, x: torch.Tensor, num_conv: int, scale: int) -> torch.Tensor:
    """Real-ESRGAN compact: conv, PReLU, (conv, PReLU) x n, conv, pixel shuffle, + nearest(x)."""
    t = x
    for i in range(num_conv + 1):
        t = F.prelu(_conv(t, sd, f"body.{2 * i}"), sd[f"body.{2 * i + 1}.weight"])
    t = _conv(t, sd, f"body.{2 * num_conv + 2}")
    return F.pixel_shuffle(t, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")


def random_srvgg(c: int, nf: int, num_conv: int, scale: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    widths = [c] + [nf] * (num_conv + 1)
    for i in range(num_conv + 1):
        sd[f"body.{2 * i}.weight"] = torch.randn(nf, widths[i], 3, 3, generator=g) * (1 / (9 * widths[i])) ** 0.5
        sd[f"body.{2 * i}.bias"] = torch.randn(nf, generator=g) * 0.05
        sd[f"body.{2 * i + 1}.weight"] = torch.rand(nf, generator=g) * 0.3
    last = 2 * num_conv + 2
    sd[f"body.{last}.weight"] = torch.randn(c * scale * scale, nf, 3, 3, generator=g) * (1 / (9 * nf)) ** 0.5
    sd[f"body.{last}.bias"] = torch.randn(c * scale * scale, generator=g) * 0.05
    return sd


def _write(tmp_path, name, payload):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(payload, path)
    else:
        torch.save(payload, path)
    return path


# --- RRDBNet -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,scale,unshuffle", [(3, 4, 1), (3, 8, 1), (1, 4, 1), (3, 2, 2), (3, 1, 4),
                                                      (1, 2, 2)])
@pytest.mark.parametrize("layout", ["old", "basicsr"])
def test_rrdbnet_equals_reference(tmp_path, channels, scale, unshuffle, layout):
    nb, nf, gc = 2, 8, 4
    n_up = {1: 2, 2: 2, 4: 2, 8: 3}[scale] if unshuffle > 1 or scale > 1 else 0
    old = random_old_esrgan(channels * unshuffle**2, channels, nf, gc, nb, n_up)
    sd = old if layout == "old" else to_basicsr_keys(old, nb, n_up)
    wrapper = {"params_ema": sd, "params": {}} if layout == "basicsr" else sd
    path = _write(tmp_path, f"m.{'pth' if layout == 'old' else 'safetensors'}",
                  wrapper if layout == "old" else sd)
    model, spec = load_upscaler(path)
    assert spec.architecture == "ESRGAN" and spec.real_esrgan == (layout == "basicsr")
    assert spec.config == RRDBNetConfig(scale=scale, channels=channels, num_features=nf, num_blocks=nb,
                                        growth_channels=gc, unshuffle=unshuffle)
    x = torch.rand(2, channels, 8, 12, generator=torch.Generator().manual_seed(1))
    xin = F.pixel_unshuffle(x, unshuffle) if unshuffle > 1 else x
    expected = reference_esrgan(old, xin, nb, n_up)
    with torch.no_grad():
        got = model(x)
    assert got.shape == (2, channels, 8 * scale, 12 * scale)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    if layout == "basicsr":  # the params_ema wrapper is preferred over params
        torch.save(wrapper, tmp_path / "w.pth")
        assert read_state_dict(tmp_path / "w.pth").keys() == sd.keys()


def test_rrdbnet_old_1x_without_upsampling(tmp_path):
    old = random_old_esrgan(3, 3, 8, 4, 1, 0)
    model, spec = load_upscaler(_write(tmp_path, "one.pth", old))
    assert spec.scale == 1 and spec.config.unshuffle == 1
    x = torch.rand(1, 3, 6, 7)
    torch.testing.assert_close(model(x), reference_esrgan(old, x, 1, 0), atol=1e-5, rtol=1e-4)


def test_rrdbnet_unshuffle_pads_odd_sizes():
    model = RRDBNet(RRDBNetConfig(scale=2, channels=3, num_features=8, num_blocks=1, growth_channels=4,
                                  unshuffle=2))
    assert model(torch.rand(1, 3, 7, 9)).shape == (1, 3, 14, 18)


def test_bsrgan_layout(tmp_path):
    old = random_old_esrgan(3, 3, 8, 4, 1, 2)
    renames = {"conv_body": "trunk_conv", "conv_hr": "HRconv", "conv_up1": "upconv1", "conv_up2": "upconv2"}
    sd = {}
    for key, v in to_basicsr_keys(old, 1, 2).items():
        module, kind = key.rsplit(".", 1)
        if module.startswith("body."):
            _, b, rdb, conv = module.split(".")
            sd[f"RRDB_trunk.{b}.RDB{rdb[-1]}.{conv}.{kind}"] = v
        else:
            sd[f"{renames.get(module, module)}.{kind}"] = v
    model, spec = load_upscaler(_write(tmp_path, "bsr.pth", sd))
    x = torch.rand(1, 3, 5, 6)
    torch.testing.assert_close(model(x), reference_esrgan(old, x, 1, 2), atol=1e-5, rtol=1e-4)


# --- SRVGGNetCompact ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels,scale,num_conv", [(3, 4, 3), (1, 2, 1), (3, 1, 0)])
@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_srvgg_equals_reference(tmp_path, channels, scale, num_conv, suffix):
    sd = random_srvgg(channels, 8, num_conv, scale)
    path = _write(tmp_path, f"c.{suffix}", {"params": sd} if suffix == "pth" else sd)
    model, spec = load_upscaler(path)
    assert spec.architecture == "SRVGGNetCompact"
    assert spec.config == SRVGGNetConfig(scale=scale, channels=channels, num_features=8, num_conv=num_conv)
    x = torch.rand(2, channels, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_srvgg(sd, x, num_conv, scale), atol=1e-5, rtol=1e-4)


# --- round trip and bad input ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("net", [
    RRDBNet(RRDBNetConfig(scale=4, channels=3, num_features=8, num_blocks=1, growth_channels=4)),
    RRDBNet(RRDBNetConfig(scale=2, channels=1, num_features=8, num_blocks=2, growth_channels=4, unshuffle=2)),
    SRVGGNetCompact(SRVGGNetConfig(scale=2, channels=3, num_features=8, num_conv=2)),
])
def test_genpix_written_file_loads_back(tmp_path, net, suffix):
    path = save_upscaler(net, tmp_path / f"mine{suffix}")
    model, spec = load_upscaler(path)
    assert spec.config == net.config
    x = torch.rand(1, net.config.channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x))
    if suffix == ".pth":  # Real-ESRGAN's wrapper, readable by a plain weights-only load
        assert set(torch.load(path, weights_only=True)) == {"params_ema"}


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/genpix-pwned-by-upscaler",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    import os

    marker = "/tmp/genpix-pwned-by-upscaler"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": _Exploit()}, f)
    torch.save({"x": _Exploit()}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(GenpixError, match="refused") as info:
            load_upscaler(p)
        assert "\n" not in str(info.value)
    assert not os.path.exists(marker)


def test_unknown_architecture_lists_supported(tmp_path):
    path = _write(tmp_path, "swin.safetensors", {"layers.0.residual_group.blocks.0.attn.qkv.weight": torch.zeros(3, 3)})
    with pytest.raises(GenpixError, match="unknown upscaler architecture.*RRDBNet.*SRVGGNetCompact") as info:
        load_upscaler(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("mutate,message", [
    (lambda sd: sd.pop("model.1.sub.0.RDB1.conv2.0.bias"), "missing"),
    (lambda sd: sd.__setitem__("model.0.weight", torch.zeros(8, 5, 3, 3)), "1x, 4x or 16x"),
    (lambda sd: sd.__setitem__("model.1.sub.0.RDB1.conv2.0.weight", torch.zeros(4, 9, 3, 3)), "shape"),
])
def test_bad_rrdb_weights(tmp_path, mutate, message):
    sd = random_old_esrgan(3, 3, 8, 4, 1, 2)
    mutate(sd)
    with pytest.raises(GenpixError, match=message):
        load_upscaler(_write(tmp_path, "bad.pth", sd))


def test_not_tensors_and_bad_suffix(tmp_path):
    torch.save({"params": {"a": 1}}, tmp_path / "nums.pth")
    with pytest.raises(GenpixError, match="state dict of tensors"):
        read_state_dict(tmp_path / "nums.pth")
    (tmp_path / "x.bin").write_bytes(b"12")
    with pytest.raises(GenpixError, match="must end in"):
        read_state_dict(tmp_path / "x.bin")
    (tmp_path / "junk.pth").write_bytes(b"not a file")
    with pytest.raises(GenpixError, match="refused"):
        read_state_dict(tmp_path / "junk.pth")


def test_inspect_state_names_architecture():
    spec, _ = inspect_state(random_srvgg(3, 8, 2, 4))
    assert (spec.architecture, spec.scale, spec.channels) == ("SRVGGNetCompact", 4, 3)


def test_scales_the_architectures_lack(tmp_path):
    with pytest.raises(GenpixError, match="scale must be one of"):
        RRDBNetConfig(scale=3)
    sd = random_srvgg(3, 8, 1, 2)
    sd["body.4.weight"], sd["body.4.bias"] = torch.zeros(10, 8, 3, 3), torch.zeros(10)  # 10 = 3 x s^2 for no s
    with pytest.raises(GenpixError, match="channels x scale\\^2"):
        load_upscaler(_write(tmp_path, "odd.safetensors", sd))
