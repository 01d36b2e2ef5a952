"""DeepCache's skip branch cut inside a level (models/deepcache.py ``block``; Ma et al. 2023, eq. 4-5).

The U-Nets' encode / decode split at any layer gives the U-Net back exactly; a cached call at the
finest cut (``block`` 1: after the first resnet and transformer of the finest level) is the
paper's composition on the cached feature, counted in layers run (forward hooks) and in FLOPs
(torch's FlopCounterMode, small networks here; the SD 1.5 figures at 256 and 512 are in
docs/benchmarks.md); the request field, its CLI flag and their bad values.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_less_work import SD_REQUEST, TINY_SD, TINY_XL, call, counting, sd_inputs, tiny_sd  # noqa: F401
from torch.utils.flop_counter import FlopCounterMode

import genpix
from genpix.errors import GenpixError
from genpix.models.deepcache import DeepCache, DeepCacheConfig, unet_layers
from genpix.models.ldm_blocks import ResnetBlock2D
from genpix.models.sd_unet import SDUNet, Transformer2DModel
from genpix.models.unet import ResBlock, UNet, UNetConfig
from genpix.pipelines.capabilities import UnsupportedOption


def networks() -> dict:
    """Two resnets per level in each, so that a level can be cut inside."""
    torch.manual_seed(0)
    pixel = UNet(UNetConfig(image_size=16, num_res_blocks=2, attention_levels=(0, 2), num_classes=3)).eval()
    torch.nn.init.normal_(pixel.conv_out.weight, std=0.1)  # not the zero init: the output must depend on the input
    return {"sd": SDUNet(TINY_SD).eval(), "sdxl": SDUNet(TINY_XL).eval(), "pixel": pixel}


def inputs(which: str):
    return sd_inputs(TINY_XL if which == "sdxl" else TINY_SD)


@pytest.mark.parametrize("which", ["sd", "sdxl", "pixel"])
@torch.no_grad()
def test_the_unet_split_at_every_layer_is_the_unet(which):
    net = networks()[which]
    x, t, context, added = inputs(which)
    if which == "pixel":
        x, extra, middle = x[:, :1], (), net.mid
        emb = net.embed(x, t, torch.zeros(x.shape[0], dtype=torch.long))
    else:
        extra, middle, emb = (context,), net.mid_block, net.embed(x, t, context, **added)
    exact = call(net, x, t, context, added)
    levels, per_level = unet_layers(net)
    total = levels * (per_level + 1)  # up layers: one per skip
    h, skips = net.encode(x, emb, *extra)
    assert len(skips) == total
    for cut in range(total):
        rest = list(skips)  # the deep part pops the skips of its layers, the rest are the shallow part's
        deep = net.decode(middle(h, emb, *extra), rest, emb, *extra, stop=cut)
        assert len(rest) == total - cut
        assert torch.equal(net.decode(deep, rest, emb, *extra, start=cut), exact), cut
        _, shallow = net.encode(x, emb, *extra, total - 1 - cut)  # the down layers whose skips those up layers pop
        assert len(shallow) == total - cut and all(torch.equal(a, b) for a, b in zip(shallow, skips))


@pytest.mark.parametrize("which", ["sd", "sdxl", "pixel"])
@torch.no_grad()
def test_finest_cut_runs_fewer_layers_and_interval_1_is_exact(which):
    net = networks()[which]
    x, t, context, added = inputs(which)
    exact = call(net, x, t, context, added)
    for block in (1, 2):
        always_full = DeepCache(net, DeepCacheConfig(interval=1, block=block))
        assert torch.equal(call(always_full, x, t, context, added), exact)
        assert torch.equal(call(always_full, x, t, context, added), exact)
    kind = ResBlock if which == "pixel" else ResnetBlock2D
    ran = {}
    for block in (None, 2, 1):
        cached = DeepCache(net, DeepCacheConfig(interval=3, block=block))
        call(cached, x, t, context, added)
        with counting(net, kind) as resnets:
            out = call(cached, x, t, context, added, scale=1.1)
        assert cached.cached_calls == 1
        ran[block] = resnets[0], out
    assert ran[None][0] == 5 and ran[1][0] == 3  # finest level: 2 down + 3 up resnets; the cut: 1 down + 2 up
    assert torch.equal(ran[None][1], ran[2][1])  # block None: after the level's last resnet
    assert not torch.equal(ran[1][1], ran[2][1])


@torch.no_grad()
def test_cached_call_is_the_papers_composition():
    """eq. 4: the full call keeps F, the input of the finest level's second-to-last up layer (U_1
    of the branch); eq. 5: the next call runs conv_in, D_1 (first resnet + transformer) and the
    last two up layers on [F, D_1(x)] and [., conv_in(x)], then the output layers."""
    net = networks()["sd"]
    x, t, context, _ = sd_inputs(TINY_SD)
    x1, t1 = x + 0.3 * torch.randn_like(x), t - 50
    up, down = net.up_blocks[-1], net.down_blocks[0]
    seen = []
    handle = up.resnets[1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        net(x, t, context)
    finally:
        handle.remove()
    cached_feature = seen[0][:, : TINY_SD.block_out_channels[0]]  # [F, skip] -> F
    temb = net.embed(x1, t1, context)
    h0 = net.conv_in(x1)
    d1 = down.attentions[0](down.resnets[0](h0, temb), context)
    h = up.attentions[1](up.resnets[1](torch.cat([cached_feature, d1], dim=1), temb), context)
    h = up.attentions[2](up.resnets[2](torch.cat([h, h0], dim=1), temb), context)
    want = net.conv_out(F.silu(net.conv_norm_out(h)))
    deepcache = DeepCache(net, DeepCacheConfig(interval=2, block=1))
    deepcache(x, t, context)
    with counting(net, Transformer2DModel) as transformers:
        got = deepcache(x1, t1, context)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert transformers[0] == 3
    assert not torch.allclose(got, net(x1, t1, context), atol=1e-3)  # the deep part is the cached one


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def test_finest_cut_does_less_arithmetic():
    net = networks()["sd"]
    x, t, context, _ = sd_inputs(TINY_SD)
    full = flops(lambda: net(x, t, context))
    ratio = {}
    for block in (None, 1):
        deepcache = DeepCache(net, DeepCacheConfig(interval=2, block=block))
        deepcache(x, t, context)
        ratio[block] = flops(lambda: deepcache(x, t, context)) / full
    # the finest level holds most of the arithmetic at this size; the cut drops 2 of its 5 layers
    assert ratio[1] < 0.7 * ratio[None] and ratio[None] < 0.8, ratio


def test_bad_block_settings_are_one_line_errors():
    with pytest.raises(GenpixError, match="block must be at least 1"):
        DeepCacheConfig(block=0)
    with pytest.raises(GenpixError, match="block 3 must be at most the U-Net's 2 layers per level"):
        DeepCache(networks()["sd"], DeepCacheConfig(block=3))
    vae = genpix.load_pipeline("fashion-vae")
    with pytest.raises(UnsupportedOption, match="deepcache_block"):
        vae(deepcache_block=1)


def test_request_field_and_cli_flag(tiny_sd, run_cli, tmp_path):  # noqa: F811 (the tiny_sd fixture)
    from genpix.io.images import read_infotext

    model = str(tiny_sd / "model")
    pipe = genpix.load_pipeline(model)
    exact = pipe(**SD_REQUEST).tensors
    assert torch.equal(pipe(**SD_REQUEST, deepcache_interval=1, deepcache_block=1).tensors, exact)
    unet = pipe.module("unet")
    ran = {}
    for block in (0, 1):
        with counting(unet, ResnetBlock2D) as resnets:
            out = pipe(**SD_REQUEST, deepcache_interval=3, deepcache_block=block)
        ran[block] = resnets[0]
    assert ran[1] < ran[0], ran
    assert "DeepCache interval: 3, DeepCache block: 1" in out.infotexts[0]
    with pytest.raises(GenpixError, match="deepcache_block needs deepcache_interval"):
        pipe(**SD_REQUEST, deepcache_block=1)
    code, _, err = run_cli("generate", "a photo", "--model", model, "--deepcache-interval", "2", "--deepcache-block",
                           "1", "--steps", "3", "--width", "32", "--height", "32", "-o", str(tmp_path / "fine"))
    assert code == 0, err
    assert "DeepCache interval: 2, DeepCache block: 1" in read_infotext(tmp_path / "fine" / "00000.png")
    for bad, said in (("3", "block 3 must be at most the U-Net's 2 layers per level"),
                      ("-1", "must be 0 (off) or more")):
        code, _, err = run_cli("generate", "a photo", "--model", model, "--deepcache-interval", "2",
                               "--deepcache-block", bad, "--steps", "2", "--width", "32", "--height", "32",
                               "-o", str(tmp_path / "bad"))
        assert code != 0 and said in err and len(err.strip().splitlines()) == 1, err
