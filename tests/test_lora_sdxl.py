"""SDXL LoRAs (kohya names after SGM modules or diffusers modules; lora_te1_ / lora_te2_) on genpix's
SDXL U-Net and both text encoders, against diffusers' load_lora_weights + fuse_lora on the tiny SDXL
fixture (sdxl_fixtures.py). As in test_lora.py, diffusers 0.36 cannot place kohya text-encoder keys
on transformers 5 models, so the text encoders' reference adds W += scale * alpha / r * up @ down."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file
from sdxl_fixtures import tiny_sdxl

from genpix.io.checkpoint import load_module_weights
from genpix.io.sd_checkpoint import key_map, unet_table
from genpix.models.lora import NetworkWeightsError
from genpix.models.sd_unet import SDUNet, SDUNetConfig
from genpix.models.text import CLIPTextModel, CLIPTextModelWithProjection
from genpix.pipelines.extra_networks import ExtraNetworks, NetworkLibrary, NetworkSpec

TE_LINEAR = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xl")
    ref = tiny_sdxl(tmp, "base")
    ref.text_encoder.save_pretrained(tmp / "te1")
    ref.text_encoder_2.save_pretrained(tmp / "te2")
    return ref, tmp


def genpix_modules(ref, tmp):
    unet = SDUNet(SDUNetConfig.from_diffusers(dict(ref.unet.config))).eval()
    load_module_weights(unet, ref.unet.state_dict(), "diffusers U-Net")
    return {"unet": unet, "text_encoder": CLIPTextModel.from_folder(tmp / "te1"),
            "text_encoder_2": CLIPTextModelWithProjection.from_folder(tmp / "te2")}


def sdxl_lora(ref, sgm: bool, seed: int = 0, rank: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    config = SDUNetConfig.from_diffusers(dict(ref.unet.config))
    with torch.device("meta"):
        names = key_map(SDUNet(config), unet_table(config))
    ldm = {k.rpartition(".")[0]: v.rpartition(".")[0] for k, v in names.items()}
    state = {}

    def add(key, weight):
        state[f"{key}.lora_down.weight"] = torch.randn(rank, weight.shape[1], generator=g) * 0.3
        state[f"{key}.lora_up.weight"] = torch.randn(weight.shape[0], rank, generator=g) * 0.3
        state[f"{key}.alpha"] = torch.tensor(2.0)

    for name, module in ref.unet.named_modules():
        if ".attentions." in name and isinstance(module, torch.nn.Linear):
            add("lora_unet_" + (ldm[name] if sgm else name).replace(".", "_"), module.weight)
    for prefix, encoder in (("lora_te1_", ref.text_encoder), ("lora_te2_", ref.text_encoder_2)):
        for name, module in encoder.named_modules():
            if name.endswith(TE_LINEAR):
                add(prefix + "text_model_" + name.removeprefix("text_model.").replace(".", "_"), module.weight)
    return state


def diffusers_fused(ref, state: dict, scale: float, tmp_path):
    pipe = copy.deepcopy(ref)
    unet_only = {k: v for k, v in state.items() if k.startswith("lora_unet_")}
    save_file(unet_only, str(tmp_path / "unet.safetensors"))
    pipe.load_lora_weights(str(tmp_path), weight_name="unet.safetensors")
    pipe.fuse_lora(lora_scale=scale, components=["unet"])
    with torch.no_grad():
        for prefix, encoder in (("lora_te1_", pipe.text_encoder), ("lora_te2_", pipe.text_encoder_2)):
            named = {prefix + "text_model_" + n.removeprefix("text_model.").replace(".", "_"): m
                     for n, m in encoder.named_modules()}
            for key in {k.partition(".")[0] for k in state if k.startswith(prefix)}:
                up, down = state[f"{key}.lora_up.weight"], state[f"{key}.lora_down.weight"]
                named[key].weight += scale * state[f"{key}.alpha"] / down.shape[0] * up @ down
    return pipe


INPUT = dict(x=torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)), t=torch.tensor([900, 20]))


def run(unet, te1, te2, ids, diffusers: bool):
    with torch.no_grad():
        if diffusers:
            h1 = te1(ids, output_hidden_states=True).hidden_states[-2]
            out2 = te2(ids, output_hidden_states=True)
            h2, pooled = out2.hidden_states[-2], out2.text_embeds
        else:
            h1 = te1(ids, clip_skip=1, final_norm=False).tokens
            out2 = te2(ids, clip_skip=1, final_norm=False)
            h2, pooled = out2.tokens, out2.pooled
        context = torch.cat([h1, h2], dim=-1).expand(2, -1, -1)
        time_ids = torch.tensor([[32.0, 32, 0, 0, 32, 32]] * 2)
        pooled = pooled.expand(2, -1)
        if diffusers:
            eps = unet(INPUT["x"], INPUT["t"], context, added_cond_kwargs={"text_embeds": pooled,
                                                                           "time_ids": time_ids}).sample
        else:
            eps = unet(INPUT["x"], INPUT["t"], context, text_embeds=pooled, time_ids=time_ids)
    return context, pooled, eps


@pytest.mark.parametrize("sgm", [True, False], ids=["sgm-names", "diffusers-names"])
def test_sdxl_lora_matches_diffusers(xl, tmp_path, sgm):
    ref, tmp = xl
    state = sdxl_lora(ref, sgm)
    (tmp_path / "Lora").mkdir()
    save_file(state, str(tmp_path / "Lora" / "xlstyle.safetensors"))
    modules = genpix_modules(ref, tmp)
    ids = torch.tensor([[49, 3, 7, 11, 50] + [50] * 72]).clamp(max=ref.text_encoder.config.vocab_size - 1)
    expected_pipe = diffusers_fused(ref, state, 0.8, tmp_path)
    expected = run(expected_pipe.unet, expected_pipe.text_encoder, expected_pipe.text_encoder_2, ids, True)
    plain = run(ref.unet, ref.text_encoder, ref.text_encoder_2, ids, True)
    assert (expected[2] - plain[2]).abs().max() > 1e-3
    networks = ExtraNetworks(tmp_path / "Lora", tmp_path / "embeddings")
    with networks.activate("a cat <lora:xlstyle:0.8>", "", modules):
        got = run(modules["unet"], modules["text_encoder"], modules["text_encoder_2"], ids, False)
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-4)


def test_sdxl_lora_on_sd1_and_sd1_lora_on_sdxl_are_refused(xl, tmp_path):
    ref, tmp = xl
    modules = genpix_modules(ref, tmp)
    (tmp_path / "Lora").mkdir()
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{key}.lora_down.weight": torch.zeros(2, 768), f"{key}.lora_up.weight": torch.zeros(128, 2)},
              str(tmp_path / "Lora" / "sd15.safetensors"))
    with pytest.raises(NetworkWeightsError, match="for another model family"):
        with NetworkLibrary(tmp_path / "Lora").applied(modules["unet"], {}, [NetworkSpec("sd15")]):
            pass


def test_sdxl_lora_images_through_load_pipeline(tmp_path_factory, tmp_path):
    """genpix.load_pipeline(SDXL folder, lora_dir=) with <lora:NAME:0.6> (SGM names, both text encoders)
    against diffusers' StableDiffusionXLPipeline with the same LoRA fused: within 3/255."""
    from diffusers import DDIMScheduler
    from sdxl_fixtures import SDXL_SCHEDULER, saved_models

    import genpix

    ref, folder, _ = saved_models(tmp_path_factory)("base")
    state = sdxl_lora(ref, sgm=True, seed=5, rank=2)
    (tmp_path / "Lora").mkdir()
    save_file(state, str(tmp_path / "Lora" / "xlink.safetensors"))
    expected_pipe = diffusers_fused(ref, state, 0.6, tmp_path)
    expected_pipe.scheduler = DDIMScheduler.from_config(SDXL_SCHEDULER)
    latents = torch.randn(1, 4, 16, 24, generator=torch.Generator().manual_seed(11))
    prompt, negative = "a photo of an astronaut riding a horse", "blurry"
    expected = expected_pipe(prompt, negative_prompt=negative, num_inference_steps=3, guidance_scale=5.0, width=48,
                             height=32, latents=latents, output_type="np").images
    pipe = genpix.load_pipeline(str(folder), lora_dir=str(tmp_path / "Lora"))
    out = pipe(prompt=f"{prompt} <lora:xlink:0.6>", negative_prompt=negative, steps=3, sampler="DDIM", cfg_scale=5.0,
               seed=0, width=48, height=32, latents=latents)
    error = float(abs(out.tensors.permute(0, 2, 3, 1).numpy() - expected).max())
    assert error < 3 / 255, error
    plain = pipe(prompt=prompt, negative_prompt=negative, steps=3, sampler="DDIM", cfg_scale=5.0, seed=0, width=48,
                 height=32, latents=latents)
    assert float(abs(plain.tensors - out.tensors).max()) > 1e-3 and "Lora hashes" in out.infotexts[0]
