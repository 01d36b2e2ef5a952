"""Tiny random SDXL pipelines (base, refiner, 9-channel inpainting) for the SDXL tests.

Built in diffusers and transformers offline: a CLIP BPE vocabulary trained in the test
(test_tokenizer.py), a CLIP-L-like text tower (64 wide, 1 head: CLIP's 64 channels per head, which a
single file cannot state), a bigG-like tower with text_projection (128 wide, 2 heads, 10 layers:
diffusers recognises SDXL by resblocks.9; gelu, eos_token_id 2 as SDXL's text_encoder_2 config), a
U-Net of SDXL's pattern at 64/128 channels (no attention at the first level, depth (1, 2), linear
projections, 64 channels per head, text_time with 8-d time sinusoids) and a 2-level VAE with SDXL's
scaling factor 0.13025.

:func:`sgm_layout` writes a pipeline's weights as one SGM (Stability-AI/generative-models) single
file: ``model.diffusion_model.*`` (LDM U-Net names, ``label_emb.0.0/0.2``), ``first_stage_model.*``,
``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L, transformers names) and
``conditioner.embedders.1.model.*`` (bigG in open_clip names: fused ``in_proj``, ``text_projection``
used as x @ P: io/sd_clip.py ``to_open_clip``); the refiner's bigG is ``conditioner.embedders.0.model.*``.
It is the inverse of diffusers' converters; the tests check it against them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers import StableDiffusionXLImg2ImgPipeline as DiffusersXLImg2Img
from diffusers import StableDiffusionXLPipeline as DiffusersXL
from test_sd_checkpoint import ldm_unet_layout, ldm_vae_layout
from test_tokenizer import CORPUS, train_bpe, write_folder

from genpix.io.sd_clip import to_open_clip

SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, timestep_spacing="leading", set_alpha_to_one=False, clip_sample=False)
L_WIDTH, G_WIDTH, TIME_DIM = 64, 128, 8
KINDS = {  # kind -> (U-Net overrides, has CLIP-L, number of time ids)
    "base": ({}, True, 6),
    "refiner": ({"cross_attention_dim": G_WIDTH, "transformer_layers_per_block": 2}, False, 5),
    "inpaint": ({"in_channels": 9}, True, 6),
}


def vocab() -> tuple[list[str], list[tuple[str, str]]]:
    return train_bpe(CORPUS, 60)


def tiny_sdxl(tmp: Path, kind: str = "base"):
    """A diffusers StableDiffusionXLPipeline (base, inpaint) or StableDiffusionXLImg2ImgPipeline
    (refiner: bigG only, aesthetic score) of tiny random components, in eval mode."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    overrides, has_l, ids = KINDS[kind]
    tokens, merges = vocab()
    eos = len(tokens) - 1
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(write_folder(tmp / "hub-tok-2", tokens, merges, pad="!")))
    text_config = dict(vocab_size=len(tokens), intermediate_size=64, num_hidden_layers=2, bos_token_id=eos - 1,
                       pad_token_id=eos)
    torch.manual_seed(0)
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**{**text_config, "num_hidden_layers": 10}, hidden_size=G_WIDTH,
                                                        num_attention_heads=2, hidden_act="gelu", eos_token_id=2,
                                                        projection_dim=G_WIDTH))
    text, tokenizer = None, None
    if has_l:
        tokenizer = CLIPTokenizer.from_pretrained(str(write_folder(tmp / "hub-tok", tokens, merges,
                                                                   pad="<|endoftext|>")))
        text = CLIPTextModel(CLIPTextConfig(**text_config, hidden_size=L_WIDTH, num_attention_heads=1,
                                            hidden_act="quick_gelu", eos_token_id=eos)).eval()
    context = overrides.get("cross_attention_dim", L_WIDTH + G_WIDTH)
    unet = UNet2DConditionModel(**{
        "block_out_channels": (64, 128), "layers_per_block": 2, "sample_size": 16, "in_channels": 4,
        "out_channels": 4, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "attention_head_dim": (1, 2),
        "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": TIME_DIM,
        "transformer_layers_per_block": (1, 2), "cross_attention_dim": context,
        "projection_class_embeddings_input_dim": G_WIDTH + ids * TIME_DIM, **overrides})
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)  # not the zero init: the U-Net must matter
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        scaling_factor=0.13025)
    parts = dict(vae=vae.eval(), text_encoder=text, text_encoder_2=text_2.eval(), tokenizer=tokenizer,
                 tokenizer_2=tokenizer_2, unet=unet.eval(),
                 scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER))
    if kind == "refiner":
        return DiffusersXLImg2Img(**parts, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
                                  add_watermarker=False)
    return DiffusersXL(**parts, add_watermarker=False)


def sgm_layout(pipe) -> dict:
    """The pipeline's weights as an SGM single file (module docstring)."""
    _, unet = ldm_unet_layout(pipe.unet)
    _, vae = ldm_vae_layout(pipe.vae)
    tensors = {**unet, **vae}
    if pipe.text_encoder is not None:
        text = {f"conditioner.embedders.0.transformer.text_model.{k.removeprefix('text_model.')}": v
                for k, v in pipe.text_encoder.state_dict().items()}
        tensors.update(text)
        tensors["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    big = "conditioner.embedders.1.model." if pipe.text_encoder is not None else "conditioner.embedders.0.model."
    tensors.update(to_open_clip(pipe.text_encoder_2.state_dict(), big))
    return {k: v.contiguous() for k, v in tensors.items()}


def saved_models(tmp_path_factory):
    """kind -> (diffusers pipeline, its save_pretrained folder, its SGM single file), each built once;
    the body of a module-scoped ``models`` fixture."""
    from safetensors.torch import save_file

    cache = {}

    def get(kind: str):
        if kind not in cache:
            tmp = tmp_path_factory.mktemp(kind)
            ref = tiny_sdxl(tmp, kind)
            ref.save_pretrained(tmp / "model")
            save_file(sgm_layout(ref), tmp / f"tiny-xl-{kind}.safetensors")
            cache[kind] = (ref, tmp / "model", tmp / f"tiny-xl-{kind}.safetensors")
        return cache[kind]

    return get
