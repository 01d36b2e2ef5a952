"""Less work per picture (pipelines/fast.py): DeepCache (models/deepcache.py), ToMe for SD
(models/tome.py) and the tiny decoder as final decoder.

Off (or at their neutral setting: DeepCache interval 1, merging ratio 0) the pictures are
bit-identical to the exact path; on, they stay close to it (PSNR bounds on the bundled trained
models at 20 steps, measured 35-50 dB, see each test; at 12 steps a flat-shape picture of
shapes-ldm can flip its composition, 14 dB, with DeepCache interval 3 or ToMe 0.5) while the U-Nets run fewer blocks (counted with hooks,
not timed); no cache or merging state outlives its call or crosses threads.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import torch

import genpix
from genpix.errors import GenpixError
from genpix.metrics.psnr import psnr
from genpix.models import tome
from genpix.models.deepcache import DeepCache, DeepCacheConfig
from genpix.models.ldm_blocks import ResnetBlock2D
from genpix.models.sd_unet import SDUNet, SDUNetConfig
from genpix.models.unet import ResBlock, UNet, UNetConfig
from genpix.pipelines.capabilities import UnsupportedOption, bind
from genpix.pipelines.request import GenerationRequest

TINY_SD = SDUNetConfig(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), num_attention_heads=(2, 4),
                       cross_attention_dim=32, norm_num_groups=8)
TINY_XL = SDUNetConfig(block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), num_attention_heads=(2, 4),
                       cross_attention_dim=32, norm_num_groups=8, transformer_layers_per_block=(1, 2),
                       use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=16 + 6 * 8)
LDM = dict(prompt="a red circle", steps=20, sampler="DPM++ 2M", cfg_scale=5.0, seed=1, n=2)


@contextmanager
def counting(module: torch.nn.Module, kind: type):
    """calls[0]: how many ``kind`` blocks inside ``module`` ran (forward pre-hooks; test only)."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    handles = [m.register_forward_pre_hook(hook) for m in module.modules() if isinstance(m, kind)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def sd_inputs(config: SDUNetConfig, b: int = 2):
    torch.manual_seed(0)
    x, t, context = torch.randn(b, 4, 16, 16), torch.full((b,), 500.0), torch.randn(b, 7, 32)
    added = {}
    if config.addition_embed_type:
        added = {"text_embeds": torch.randn(b, 16), "time_ids": torch.rand(b, 6) * 64}
    return x, t, context, added


def networks():
    torch.manual_seed(0)
    sd, xl = SDUNet(TINY_SD).eval(), SDUNet(TINY_XL).eval()
    pixel = UNet(UNetConfig(image_size=16, num_classes=3)).eval()
    torch.nn.init.normal_(pixel.conv_out.weight, std=0.1)  # not the zero init: the output must depend on the input
    return sd, xl, pixel


def call(net, x, t, context, added, scale: float = 1.0):
    if isinstance(getattr(net, "unet", net), UNet):
        return net(x[:, :1] * scale, t, class_labels=torch.zeros(x.shape[0], dtype=torch.long))
    return net(x * scale, t, context, **added)


@pytest.mark.parametrize("which", ["sd", "sdxl", "pixel"])
@torch.no_grad()
def test_deepcache_full_and_cached_calls(which):
    net = dict(zip(("sd", "sdxl", "pixel"), networks()))[which]
    config = TINY_XL if which == "sdxl" else TINY_SD
    x, t, context, added = sd_inputs(config)
    exact = call(net, x, t, context, added)
    always_full = DeepCache(net, DeepCacheConfig(interval=1))
    for _ in range(3):  # interval 1: every call is the exact U-Net, bit for bit
        assert torch.equal(call(always_full, x, t, context, added), exact)
    assert always_full.cached_calls == 0
    cached = DeepCache(net, DeepCacheConfig(interval=3))
    kind = ResBlock if which == "pixel" else ResnetBlock2D
    with counting(net, kind) as full_blocks:
        assert torch.equal(call(cached, x, t, context, added), exact)
    with counting(net, kind) as shallow_blocks:  # the same input on the cached feature: the same output
        assert torch.equal(call(cached, x, t, context, added), exact)
    moved = call(cached, x, t, context, added, scale=1.1)  # a new input: only the shallow branch follows it
    assert not torch.equal(moved, call(net, x, t, context, added, scale=1.1))
    assert (cached.full_calls, cached.cached_calls) == (1, 2)
    # branch 1 of 2 levels: conv_in, level 0 down and its up block; SD: 2 + 3 of 12 resnets
    assert shallow_blocks[0] < full_blocks[0] / 2, (shallow_blocks[0], full_blocks[0])
    call(cached, x, t, context, added)
    assert cached.full_calls == 2  # every third call refreshes the cache


@torch.no_grad()
def test_deepcache_refreshes_when_the_batch_changes():
    net = networks()[0]
    x, t, context, _ = sd_inputs(TINY_SD, 4)
    cached = DeepCache(net, DeepCacheConfig(interval=5))
    cached(x, t, context)
    assert torch.equal(cached(x[:2], t[:2], context[:2]), net(x[:2], t[:2], context[:2]))  # guidance cut off
    assert cached.full_calls == 2


def test_bad_deepcache_settings_are_one_line_errors():
    with pytest.raises(GenpixError, match="interval must be at least 1"):
        DeepCacheConfig(interval=0)
    with pytest.raises(GenpixError, match="below the U-Net's 2 levels"):
        DeepCache(networks()[0], DeepCacheConfig(branch=2))


def reference_merged_tokens(x: torch.Tensor, h: int, w: int, r: int) -> torch.Tensor:
    """unmerge(merge(x)) written from the paper, one token at a time (batch 1): destinations the
    first position of each 2x2 window, the r sources most similar (cosine) to their best
    destination averaged into it, every merged token then reading its destination's average."""
    tokens = x[0]
    dst = [i for i in range(h * w) if (i // w) % 2 == 0 and (i % w) % 2 == 0 and i // w < h // 2 * 2
           and i % w < w // 2 * 2]
    src = [i for i in range(h * w) if i not in dst]
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    best = {s: max(dst, key=lambda d: float(unit[s] @ unit[d])) for s in src}
    score = {s: float(unit[s] @ unit[best[s]]) for s in src}
    merged = sorted(src, key=lambda s: -score[s])[:r]
    out = tokens.clone()
    for d in dst:
        group = [d] + [s for s in merged if best[s] == d]
        out[d] = tokens[group].mean(0)
    for s in merged:
        out[s] = out[best[s]]
    return out[None]


@pytest.mark.parametrize("h, w, r", [(8, 8, 20), (6, 10, 30), (7, 5, 10)])
def test_bipartite_soft_matching_equals_the_papers_procedure(h, w, r):
    torch.manual_seed(h * w)
    x = torch.randn(1, h * w, 6)
    merge, unmerge = tome.bipartite_soft_matching_2d(x, w, h, 2, 2, r)
    assert merge(x).shape == (1, h * w - r, 6)
    torch.testing.assert_close(unmerge(merge(x)), reference_merged_tokens(x, h, w, r))


@torch.no_grad()
def test_token_merging_shrinks_the_finest_self_attention_only():
    net = networks()[0]
    x, t, context, _ = sd_inputs(TINY_SD)
    exact = net(x, t, context)
    seen = []
    attn1 = net.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    handle = attn1.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        with tome.merging(tome.TokenMergingConfig(0.0), (16, 16)):
            assert torch.equal(net(x, t, context), exact)  # ratio 0: the exact path
        with tome.merging(tome.TokenMergingConfig(0.5), (16, 16)):
            merged = net(x, t, context)
    finally:
        handle.remove()
    assert seen == [256, 128]  # half of the 16x16 tokens merged away before the self-attention
    assert not torch.equal(merged, exact)
    assert tome._ACTIVE.get() is None
    with pytest.raises(GenpixError, match="ratio must be in"):
        tome.TokenMergingConfig(1.0)


@pytest.fixture(scope="module")
def ldm():
    return genpix.load_pipeline("shapes-ldm")


@pytest.fixture(scope="module")
def ldm_exact(ldm):
    return ldm(**LDM).tensors


def test_switches_off_or_neutral_are_the_exact_pictures(ldm, ldm_exact):
    assert torch.equal(ldm(**LDM, deepcache_interval=0, token_merging_ratio=0.0, tiny_decode=False).tensors,
                       ldm_exact)
    assert torch.equal(ldm(**LDM, deepcache_interval=1).tensors, ldm_exact)  # through the wrapper, every call full
    assert torch.equal(ldm(**LDM, token_merging_ratio=0.0).tensors, ldm_exact)


@pytest.mark.parametrize("fields, bound", [
    (dict(deepcache_interval=3), 30.0),  # measured 41.4 and 35.3 dB
    (dict(token_merging_ratio=0.5), 38.0),  # measured 50.7 and 46.1 dB
    (dict(tiny_decode=True), 30.0),  # the distilled decoder: measured 36.3 and 38.4 dB
])
def test_switches_on_stay_close_to_the_exact_pictures(ldm, ldm_exact, fields, bound):
    out = ldm(**LDM, **fields).tensors
    assert not torch.equal(out, ldm_exact)
    assert psnr(out, ldm_exact).min().item() >= bound, psnr(out, ldm_exact)


def test_deepcache_runs_fewer_blocks_in_the_pipeline(ldm):
    unet = ldm.module("unet").unet
    with counting(unet, ResnetBlock2D) as exact:
        ldm(**LDM)
    with counting(unet, ResnetBlock2D) as cached:
        ldm(**LDM, deepcache_interval=3)
    assert cached[0] < 0.7 * exact[0], (cached[0], exact[0])


def test_tiny_decode_decodes_the_same_latents_with_the_preview_decoder(ldm):
    plan = bind(GenerationRequest.of(**LDM), ldm.capabilities)
    with torch.no_grad():
        expected = ldm.parts.preview.decode(ldm.sample_latents(plan))
    assert torch.equal(ldm(**LDM, tiny_decode=True).tensors, expected)


def test_no_state_outlives_a_call_or_crosses_threads(ldm, ldm_exact):
    first = ldm(**LDM, deepcache_interval=3, token_merging_ratio=0.5).tensors
    assert torch.equal(ldm(**LDM).tensors, ldm_exact)  # the next plain request is the exact one
    assert torch.equal(ldm(**LDM, deepcache_interval=3, token_merging_ratio=0.5).tensors, first)  # no carried cache
    assert tome._ACTIVE.get() is None
    results = {}

    def run(name, **fields):
        results[name] = ldm(**LDM, **fields).tensors

    threads = [threading.Thread(target=run, args=("plain",)),
               threading.Thread(target=run, args=("fast",), kwargs=dict(deepcache_interval=3, token_merging_ratio=0.5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torch.equal(results["plain"], ldm_exact)
    assert torch.equal(results["fast"], first)


def test_pixel_model_deepcache_and_refusals():
    pipe = genpix.load_pipeline("fashion-ddpm")
    request = dict(class_name=pipe.class_names[7], steps=20, sampler="DDIM", seed=1, n=4)
    exact = pipe(**request).tensors
    assert torch.equal(pipe(**request, deepcache_interval=1).tensors, exact)
    with counting(pipe.module("unet"), ResBlock) as blocks:
        cached = pipe(**request, deepcache_interval=2).tensors
    assert psnr(cached, exact).min().item() >= 33.0  # measured 36.6 dB worst of 8 at 20 steps
    assert blocks[0] < 0.75 * 20 * 2 * sum(isinstance(m, ResBlock) for m in pipe.module("unet").modules())
    with pytest.raises(GenpixError, match="cross-attention U-Net"):
        pipe(**request, token_merging_ratio=0.5)
    with pytest.raises(GenpixError, match="latent models"):
        pipe(**request, tiny_decode=True)
    vae = genpix.load_pipeline("fashion-vae")
    with pytest.raises(UnsupportedOption, match="deepcache_interval"):
        vae(deepcache_interval=3)
    assert "deepcache_interval" in vae.generate(GenerationRequest.of(deepcache_interval=3), lenient=True).info["ignored"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """diffusers' tiny SD test model (2-level autoencoder: latents at 1/2 size) and two TAESD-layout
    decoder files: one that fits it (one upsampling), one of SD's shape (8x) that does not."""
    from test_sd_pipeline import tiny_diffusers
    from test_tokenizer import CORPUS, train_bpe

    from genpix.io.tiny_decoder import write_tiny_decoder
    from genpix.models.taesd import TinyDecoder, TinyDecoderConfig

    root = tmp_path_factory.mktemp("tiny-sd")
    tiny_diffusers(root, train_bpe(CORPUS, 60), "sd1").save_pretrained(root / "model")
    torch.manual_seed(0)
    write_tiny_decoder(root / "fits.safetensors", TinyDecoder(TinyDecoderConfig(channels=8, blocks=(2, 1))))
    write_tiny_decoder(root / "sd.safetensors", TinyDecoder(TinyDecoderConfig(channels=8)))
    return root


SD_REQUEST = dict(prompt="a photo of an astronaut", steps=4, sampler="DPM++ 2M", cfg_scale=7.0, seed=3)


def test_sd_checkpoint_with_a_taesd_file_decodes_with_it(tiny_sd):
    pipe = genpix.load_pipeline(str(tiny_sd / "model"), preview_decoder=str(tiny_sd / "fits.safetensors"))
    plan = bind(GenerationRequest.of(**SD_REQUEST), pipe.capabilities)
    with torch.no_grad():
        expected = pipe.parts.preview.decode(pipe.sample_latents(plan))
    assert torch.equal(pipe(**SD_REQUEST, tiny_decode=True).tensors, expected)
    assert "Tiny decode: True" in pipe(**SD_REQUEST, tiny_decode=True).infotexts[0]
    plain = genpix.load_pipeline(str(tiny_sd / "model"))
    assert torch.equal(plain(**SD_REQUEST).tensors, pipe(**SD_REQUEST).tensors)  # the option alone changes nothing
    with pytest.raises(GenpixError, match="preview_decoder=FILE"):
        plain(**SD_REQUEST, tiny_decode=True)
    with pytest.raises(GenpixError, match="upsampled 8x; this model has 4-channel latents at 1/2 size"):
        genpix.load_pipeline(str(tiny_sd / "model"), preview_decoder=str(tiny_sd / "sd.safetensors"))


def test_generate_cli_fast_and_tiny_decoder_flags(tiny_sd, run_cli, tmp_path):
    from genpix.io.images import read_infotext

    model, fits = str(tiny_sd / "model"), str(tiny_sd / "fits.safetensors")
    code, _, err = run_cli("generate", "a photo", "--model", model, "--fast", "--preview-decoder", fits,
                           "--width", "32", "--height", "32", "-o", str(tmp_path / "fast"))
    assert code == 0, err
    text = read_infotext(tmp_path / "fast" / "00000.png")
    for part in ("Steps: 15", "Sampler: DPM++ 2M", "Schedule type: Karras", "Token merging ratio: 0.5",
                 "DeepCache interval: 2", "Tiny decode: True"):
        assert part in text, text
    code, _, err = run_cli("generate", "a photo", "--model", model, "--fast", "--steps", "3", "--sampler", "Euler",
                           "--token-merging-ratio", "0.3", "--width", "32", "--height", "32", "-o", str(tmp_path / "mine"))
    assert code == 0, err
    text = read_infotext(tmp_path / "mine" / "00000.png")
    for part in ("Steps: 3", "Sampler: Euler", "Token merging ratio: 0.3", "DeepCache interval: 2"):
        assert part in text, text  # the flags given win over the preset; no tiny decoder loaded: none used
    assert "Karras" not in text and "Tiny decode" not in text
    code, _, err = run_cli("generate", "a photo", "--model", model, "--vae", "tiny", "--width", "32", "--height", "32",
                           "-o", str(tmp_path / "none"))
    assert code != 0 and "preview_decoder=FILE" in err and len(err.strip().splitlines()) == 1


def test_fast_preset_for_few_step_models():
    from types import SimpleNamespace

    from genpix.pipelines.fast import fast_preset

    ldm = genpix.load_pipeline("shapes-ldm")
    assert fast_preset(ldm) == {"steps": 15, "sampler": "DPM++ 2M", "schedule": "Karras", "deepcache_interval": 2,
                                "token_merging_ratio": 0.5, "tiny_decode": True}
    lcm = SimpleNamespace(model_name="dreamshaper-LCM", parts=ldm.parts)
    assert fast_preset(lcm) == {"steps": 4, "sampler": "LCM", "cfg_scale": 1.0, "tiny_decode": True}
    tagged = SimpleNamespace(model_name="v1-5", parts=ldm.parts)
    assert fast_preset(tagged, "a cat <lora:sdxl_lightning_4step:1>")["schedule"] == "SGM Uniform"
    assert "token_merging_ratio" not in fast_preset(genpix.load_pipeline("fashion-ddpm"))
