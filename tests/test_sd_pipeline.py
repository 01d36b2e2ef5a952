"""Stable Diffusion pipelines against diffusers' StableDiffusionPipeline (the pinned test oracle).

Tiny random SD1-like (eps, openai-CLIP text tower) and SD2-like (v-prediction, OpenCLIP text tower
with "!" padding, linear projections, 16 channels per head) pipelines are built in diffusers and
transformers offline, with a CLIP BPE vocabulary trained in the test (test_tokenizer.py). Each is
saved with save_pretrained and as a single LDM-layout file; genpix loads both and must make the
images diffusers makes from the same latents, prompt and negative prompt, 4 steps at CFG 7.5:
max absolute difference 1e-4 on images in [0, 1] (float32 rounding through U-Net, sampler and
VAE; measured 1e-6 to 7e-6, printed by the assertion when it fails). img2img and a 9-channel
inpainting U-Net are compared with diffusers' img2img and inpaint pipelines the same way.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       PNDMScheduler, UNet2DConditionModel)
from diffusers import StableDiffusionPipeline as DiffusersSD
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
from safetensors.torch import save_file
from test_sd_checkpoint import ldm_unet_layout, ldm_vae_layout
from test_tokenizer import CORPUS, train_bpe, write_folder

import genpix
from genpix.errors import GenpixError
from genpix.io.checkpoint import CheckpointError
from genpix.io.images import parse_infotext, read_infotext
from genpix.models.tokenizer import TokenizerError

PROMPT, NEGATIVE = "a photo of an astronaut riding a horse on the moon", "a painting, blurry"
SIZE, STEPS, CFG, SEED = 32, 4, 7.5, 3  # 32x32 images: 16x16 latents with the 2-level VAE
TOLERANCE = 1e-4
SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1)
KINDS = {
    "sd1": dict(unet={}, act="quick_gelu", pad="<|endoftext|>", prediction="epsilon"),
    "sd2-v": dict(unet=dict(attention_head_dim=(2, 4), use_linear_projection=True), act="gelu", pad="!",
                  prediction="v_prediction"),
}


@pytest.fixture(scope="module")
def vocab():
    return train_bpe(CORPUS, 60)


def tiny_diffusers(tmp_path, vocab, kind: str) -> DiffusersSD:
    """diffusers' own tiny SD test components (block_out_channels (32, 64)), with a 128-wide CLIP
    text tower of 2 heads (CLIP's 64 channels per head, which a single file cannot state)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    spec = KINDS[kind]
    tokens, merges = vocab
    tokenizer = CLIPTokenizer.from_pretrained(str(write_folder(tmp_path / f"hub-{kind}", tokens, merges,
                                                                pad=spec["pad"])))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=SIZE // 2,
                                in_channels=4, out_channels=4, cross_attention_dim=128,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **spec["unet"])
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)  # not the zero init: the U-Net must matter
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    eos = len(tokens) - 1
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokens), hidden_size=128, intermediate_size=64,
                                        num_attention_heads=2, num_hidden_layers=2, hidden_act=spec["act"],
                                        bos_token_id=eos - 1, eos_token_id=eos, pad_token_id=eos))
    scheduler = DDIMScheduler(**SD_SCHEDULER, prediction_type=spec["prediction"])
    return DiffusersSD(unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(), tokenizer=tokenizer,
                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                       requires_safety_checker=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory, vocab):
    """kind -> (kind, diffusers pipeline, its save_pretrained folder), built once per module."""
    cache = {}

    def get(kind: str):
        if kind not in cache:
            tmp = tmp_path_factory.mktemp(kind)
            ref = tiny_diffusers(tmp, vocab, kind)
            ref.save_pretrained(tmp / "model")
            cache[kind] = (kind, ref, tmp / "model")
        return cache[kind]

    return get


@pytest.fixture(params=list(KINDS))
def model(request, models):
    return models(request.param)


@pytest.fixture
def sd1(models):
    return models("sd1")


def start_latents(n: int = 1) -> torch.Tensor:
    return torch.randn(n, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(11))


SCHEDULERS = {  # sd-webui sampler -> the diffusers scheduler that runs it (reference/diffusers.md)
    "DDIM": (DDIMScheduler, {}),
    "PLMS": (PNDMScheduler, {"skip_prk_steps": True}),
    "Euler": (EulerDiscreteScheduler, {"timestep_spacing": "linspace"}),
    "Euler a": (EulerAncestralDiscreteScheduler, {"timestep_spacing": "linspace"}),
}


def diffusers_images(ref: DiffusersSD, sampler: str, latents: torch.Tensor) -> np.ndarray:
    cls, extra = SCHEDULERS[sampler]
    # from_config ignores the options a scheduler class lacks
    base = {**SD_SCHEDULER, "prediction_type": ref.scheduler.config.prediction_type}
    ref.scheduler = cls.from_config(base, **extra)
    return ref(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE,
               width=SIZE, latents=latents, generator=torch.Generator().manual_seed(SEED), output_type="np").images


def assert_same_images(out, expected: np.ndarray) -> None:
    ours = out.tensors.permute(0, 2, 3, 1).numpy()
    error = float(np.abs(ours - expected).max())
    assert error < TOLERANCE, f"max |genpix - diffusers| = {error:.2e}"
    assert expected.std() > 0.01  # the images are not trivially flat


# diffusers' PNDMScheduler combines raw v predictions of different timesteps and converts the sum
# to eps with the current step's alpha (scheduling_pndm.py _get_prev_sample); CompVis' PLMS, and so
# sd-webui and genpix, combine the eps of each step. Equal for eps models only, so PLMS is compared there.
CASES = [(kind, sampler) for kind in KINDS for sampler in SCHEDULERS if (kind, sampler) != ("sd2-v", "PLMS")]


@pytest.mark.parametrize("kind, sampler", CASES)
def test_diffusers_folder_makes_diffusers_images(models, kind, sampler):
    """DDIM and PLMS (leading spacing, steps_offset 1, set_alpha_to_one False), Euler and Euler a
    (linspace spacing; Euler a's noise from the same seeded generator on both sides)."""
    kind, ref, folder = models(kind)
    pipe = genpix.load_pipeline(str(folder))
    assert pipe.prediction == ("v" if kind == "sd2-v" else "eps")
    latents = start_latents()
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler=sampler, cfg_scale=CFG, seed=SEED,
               width=SIZE, height=SIZE, latents=latents)
    assert_same_images(out, diffusers_images(ref, sampler, latents))
    assert out.images[0].size == (SIZE, SIZE) and out.info["seeds"] == [SEED]
    fields = parse_infotext(out.infotexts[0])
    assert (fields["Prompt"], fields["Negative prompt"], fields["Sampler"], fields["Seed"], fields["Size"]) == \
        (PROMPT, NEGATIVE, sampler, str(SEED), f"{SIZE}x{SIZE}")


def test_seeds_are_per_image(model):
    """Image i starts from seed + i whatever the batch: n=2 from seed 5 repeats n=1 from seed 6."""
    _, _, folder = model
    pipe = genpix.load_pipeline(str(folder))
    two = pipe(prompt=PROMPT, steps=2, sampler="Euler a", seed=5, width=SIZE, height=SIZE, n=2)
    one = pipe(prompt=PROMPT, steps=2, sampler="Euler a", seed=6, width=SIZE, height=SIZE)
    assert two.info["seeds"] == [5, 6] and len(two.images) == 2
    torch.testing.assert_close(two.tensors[1:], one.tensors, rtol=0, atol=1e-5)  # batched float rounding
    assert not torch.allclose(two.tensors[0], two.tensors[1])


@pytest.mark.parametrize("sampler", ["DDIM", "Euler a"])
def test_img2img_makes_diffusers_img2img_images(models, sampler):
    """SDEdit against StableDiffusionImg2ImgPipeline: the posterior sample, the noise and Euler a's
    step noise all come from the image's generator in diffusers' order; strength 0.5 of 4 steps."""
    from diffusers import StableDiffusionImg2ImgPipeline

    _, ref, folder = models("sd1")
    image = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    image = torch.nn.functional.interpolate(image, size=(SIZE, SIZE), mode="bilinear")  # smooth, in [0, 1]
    img2img = StableDiffusionImg2ImgPipeline(**ref.components)
    cls, extra = SCHEDULERS[sampler]
    img2img.scheduler = cls.from_config({**SD_SCHEDULER}, **extra)
    expected = img2img(PROMPT, image=image.permute(0, 2, 3, 1).numpy(), strength=0.5, negative_prompt=NEGATIVE,
                       num_inference_steps=STEPS, guidance_scale=CFG, output_type="np",
                       generator=torch.Generator().manual_seed(SEED)).images
    pipe = genpix.load_pipeline(str(folder))
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler=sampler, cfg_scale=CFG, seed=SEED,
               init_images=image, strength=0.5)
    assert_same_images(out, expected)
    assert parse_infotext(out.infotexts[0])["Denoising strength"] == "0.5"
    with pytest.raises(GenpixError, match="strength must be between 0 and 1"):
        pipe(prompt=PROMPT, init_images=image, strength=1.5)


@pytest.fixture(scope="module")
def inpainting(models, tmp_path_factory):
    """The SD1-like pipeline with a 9-channel U-Net (latents, mask, masked-image latents), saved."""
    from diffusers import StableDiffusionInpaintPipeline

    _, ref, _ = models("sd1")
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**{**ref.unet.config, "in_channels": 9}).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
    pipe = StableDiffusionInpaintPipeline(**{**ref.components, "unet": unet})
    folder = tmp_path_factory.mktemp("inpaint") / "model"
    pipe.save_pretrained(folder)
    return pipe, folder


@pytest.mark.parametrize("sampler, strength", [("DDIM", 1.0), ("Euler a", 1.0), ("Euler", 0.75)])
def test_inpainting_model_makes_diffusers_inpaint_images(inpainting, sampler, strength):
    """A 9-channel U-Net against StableDiffusionInpaintPipeline: the mask binarised and resized to
    the latent grid, the masked image (grey where repainted) encoded with a posterior sample; from
    pure noise (strength 1) and from the noised image (0.75)."""
    ref, folder = inpainting
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2)),
                                            size=(SIZE, SIZE), mode="bilinear")
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., :, : SIZE // 2] = 0.8  # the left half is repainted (>= 0.5 after binarising)
    cls, extra = SCHEDULERS[sampler]
    ref.scheduler = cls.from_config({**SD_SCHEDULER}, **extra)
    expected = ref(PROMPT, image=image.permute(0, 2, 3, 1).numpy(), mask_image=mask, strength=strength,
                   negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE, width=SIZE,
                   output_type="np", generator=torch.Generator().manual_seed(SEED)).images
    pipe = genpix.load_pipeline(str(folder))
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler=sampler, cfg_scale=CFG, seed=SEED,
               init_images=image, mask=mask, strength=strength)
    assert_same_images(out, expected)
    with pytest.raises(GenpixError, match="is an inpainting model .*give it an init image and a mask"):
        pipe(prompt=PROMPT, width=SIZE, height=SIZE)


# --- single files in the LDM layout -------------------------------------------------------------------


def open_clip_layout(text_state: dict, extra_layer: dict) -> dict:
    """transformers CLIP text weights in open_clip's names (cond_stage_model.model.*), plus the last
    resblock SD 2.x skips (``extra_layer``), text_projection and logit_scale, which are unused."""
    p, ldm = "cond_stage_model.model.", {}
    ldm[p + "token_embedding.weight"] = text_state["embeddings.token_embedding.weight"]
    ldm[p + "positional_embedding"] = text_state["embeddings.position_embedding.weight"]
    for kind in ("weight", "bias"):
        ldm[p + f"ln_final.{kind}"] = text_state[f"final_layer_norm.{kind}"]
    layers = 1 + max(int(k.split(".")[2]) for k in text_state if k.startswith("encoder.layers."))
    for i in range(layers + 1):
        ours = f"encoder.layers.{i}."
        source = text_state if i < layers else {ours + k: v for k, v in extra_layer.items()}
        r = f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            ldm[r + f"attn.in_proj_{kind}"] = torch.cat([source[f"{ours}self_attn.{x}_proj.{kind}"] for x in "qkv"])
            for theirs, name in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                                 ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj")):
                ldm[r + f"{theirs}.{kind}"] = source[f"{ours}{name}.{kind}"]
    ldm[p + "text_projection"] = torch.randn(128, 64)
    ldm[p + "logit_scale"] = torch.tensor(4.6)
    return ldm


def sd2_yaml() -> str:
    """A v2-inference-v.yaml for the tiny SD2-like model (16 channels per head)."""
    return """model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    image_size: 16
    channels: 4
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [2]
        num_res_blocks: 2
        channel_mult: [1, 2]
        num_head_channels: 16
        use_spatial_transformer: True
        use_linear_in_transformer: True
        transformer_depth: 1
        context_dim: 128
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig: {double_z: true, z_channels: 4, resolution: 256, in_channels: 3, out_ch: 3, ch: 32,
                   ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [], dropout: 0.0}
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params: {freeze: True, layer: "penultimate"}
"""


def write_single_file(ref: DiffusersSD, kind: str, path) -> None:
    """The diffusers pipeline's weights in the LDM layout (our tables inverted, as test_sd_checkpoint
    checks against diffusers' converters); SD 2.x's OpenCLIP layout checked by diffusers' converter."""
    _, unet = ldm_unet_layout(ref.unet)
    _, vae = ldm_vae_layout(ref.vae)
    text_state = ref.text_encoder.state_dict()
    if kind == "sd1":
        text = {f"cond_stage_model.transformer.text_model.{k}": v for k, v in text_state.items()}
        text["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    else:
        torch.manual_seed(5)
        extra = {k.removeprefix("encoder.layers.0."): torch.randn_like(v) for k, v in text_state.items()
                 if k.startswith("encoder.layers.0.")}
        text = open_clip_layout(text_state, extra)
        back = convert_open_clip_checkpoint(ref.text_encoder, text)  # diffusers reads our layout back
        for key, tensor in text_state.items():
            assert torch.equal(back["text_model." + key], tensor), key
        path.with_suffix(".yaml").write_text(sd2_yaml())
    tensors = {k: v.contiguous() for k, v in {**unet, **vae, **text}.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, path)
    else:
        torch.save({"state_dict": tensors, "global_step": 1}, path)


@pytest.fixture
def no_tokenizer_caches(tmp_path, monkeypatch):
    """Empty genpix and Hugging Face caches: only what the test gives is found."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_makes_the_same_images(model, vocab, tmp_path, suffix, no_tokenizer_caches):
    """The same weights as one LDM-layout file (SD 2.x: with its YAML) and a tokenizer folder."""
    kind, ref, _ = model
    path = tmp_path / f"tiny-{kind}{suffix}"
    write_single_file(ref, kind, path)
    with pytest.raises(TokenizerError, match=r"holds no tokenizer vocabulary .*vocab\.json and merges\.txt"):
        genpix.load_pipeline(str(path))
    tokenizer = write_folder(tmp_path / "tokenizer", *vocab)  # a hub folder: vocab.json + merges.txt only
    pipe = genpix.load_pipeline(str(path), tokenizer=str(tokenizer))
    assert pipe.prediction == ("v" if kind == "sd2-v" else "eps")
    assert pipe.parts.conditioner.tokenizer.pad_id == (0 if kind == "sd2-v" else pipe.parts.conditioner.tokenizer.eos_id)  # SD 2.x pads with "!"
    latents = start_latents()
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM", cfg_scale=CFG, seed=SEED,
               width=SIZE, height=SIZE, latents=latents)
    assert_same_images(out, diffusers_images(ref, "DDIM", latents))


def test_single_file_finds_the_tokenizer_in_the_hf_cache(sd1, vocab, tmp_path, no_tokenizer_caches):
    kind, ref, _ = sd1
    path = tmp_path / "tiny.safetensors"
    write_single_file(ref, kind, path)
    write_folder(tmp_path / "hf" / "models--openai--clip-vit-large-patch14" / "snapshots" / "abc", *vocab)
    pipe = genpix.load_pipeline(str(path))
    latents = start_latents()
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, sampler="Euler", cfg_scale=CFG,
               width=SIZE, height=SIZE, latents=latents)
    assert_same_images(out, diffusers_images(ref, "Euler", latents))


def test_external_vae_and_prediction_override(sd1, tmp_path):
    """--vae FILE replaces the autoencoder (sd-webui's external .vae.safetensors, bare LDM names);
    --prediction overrides the scheduler's parameterisation."""
    kind, ref, folder = sd1
    torch.manual_seed(7)
    other = AutoencoderKL(block_out_channels=(32, 64), latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2).eval()
    _, ldm = ldm_vae_layout(other)
    bare = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in ldm.items()}
    save_file(bare, tmp_path / "x.vae.safetensors")
    save_file(other.state_dict(), tmp_path / "diffusion_pytorch_model.safetensors")  # diffusers' names
    z = torch.randn(1, 4, 8, 8)
    for file in ("x.vae.safetensors", "diffusion_pytorch_model.safetensors"):
        pipe = genpix.load_pipeline(str(folder), vae=str(tmp_path / file), prediction="v")
        assert pipe.prediction == "v"
        with torch.no_grad():
            torch.testing.assert_close(pipe.module("vae").decode(z), other.decode(z).sample, rtol=0, atol=1e-5)


# --- the command line ----------------------------------------------------------------------------------


def test_generate_cli_writes_pngs_with_infotext(sd1, run_cli, tmp_path):
    kind, _, folder = sd1
    out = tmp_path / "out"
    status, stdout, err = run_cli("generate", PROMPT, "--model", folder, "--negative-prompt", NEGATIVE, "--steps", 2,
                                  "--sampler", "DPM++ 2M Karras", "--cfg-scale", 5, "--seed", 9, "-n", 2,
                                  "--width", SIZE, "--height", 16, "-o", out)
    assert status == 0, err
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000.png", "00001.png"]
    fields = parse_infotext(read_infotext(files[1]))
    assert (fields["Prompt"], fields["Negative prompt"], fields["Seed"], fields["Size"], fields["Sampler"],
            fields["Schedule type"], fields["CFG scale"], fields["Steps"]) == \
        (PROMPT, NEGATIVE, "10", f"{SIZE}x16", "DPM++ 2M", "Karras", "5.0", "2")
    from PIL import Image

    assert Image.open(files[0]).size == (SIZE, 16)


def test_img2img_cli_with_a_diffusers_folder(sd1, run_cli, tmp_path):
    """`genpix img2img IMAGE PROMPT --model FOLDER`: the image is resized to the model's default size
    and the PNG is what the Python call makes from the same pixels."""
    from PIL import Image

    kind, _, folder = sd1
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    out = tmp_path / "out"
    status, _, err = run_cli("img2img", tmp_path / "in.png", PROMPT, "--model", folder, "--strength", 0.5,
                             "--steps", STEPS, "--sampler", "DDIM", "--seed", SEED, "--cfg-scale", CFG, "-o", out)
    assert status == 0, err
    written = np.asarray(Image.open(out / "00000.png"))
    pipe = genpix.load_pipeline(str(folder))
    assert written.shape == (pipe.default_size, pipe.default_size, 3)
    from genpix.data import load_image_file

    init = torch.from_numpy(load_image_file(tmp_path / "in.png", image_size=pipe.default_size, channels=3))
    expected = pipe(prompt=PROMPT, steps=STEPS, sampler="DDIM", cfg_scale=CFG, seed=SEED,
                    init_images=init[None].float() / 255, strength=0.5)
    assert np.array_equal(written, np.asarray(expected.images[0]))


# --- bad input ------------------------------------------------------------------------------------------


def test_bad_input_is_one_clear_error(sd1, run_cli, tmp_path):
    kind, _, folder = sd1
    pipe = genpix.load_pipeline(str(folder))
    with pytest.raises(GenpixError, match="multiples of 8, got 30x32"):
        pipe(prompt=PROMPT, width=30, height=32, steps=1)
    with pytest.raises(GenpixError, match="unknown sampler 'Euler z'; choose one of: .*Euler a"):
        pipe(prompt=PROMPT, sampler="Euler z", width=SIZE, height=SIZE)
    with pytest.raises(GenpixError, match=r"latents must be \(1, 4, 16, 16\)"):
        pipe(prompt=PROMPT, width=SIZE, height=SIZE, latents=torch.zeros(1, 4, 8, 8))
    with pytest.raises(GenpixError, match=r"clip_skip must be between 1 and 2 \(sd-webui's Clip skip\), got 3"):
        pipe(prompt=PROMPT, width=SIZE, height=SIZE, clip_skip=3)
    image, mask = torch.rand(1, 3, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)
    with pytest.raises(GenpixError, match=r"mask must be \(1 or 1, 1, 32, 32\)"):  # (ordinary models inpaint too)
        pipe(prompt=PROMPT, init_images=image, mask=mask[..., :8])
    with pytest.raises(GenpixError, match="inpainting fill must be one of 0 fill, 1 original, 2 latent noise"):
        pipe(prompt=PROMPT, init_images=image, mask=mask, inpainting_fill=7)
    with pytest.raises(GenpixError, match=r"init images must be \(1 or 1, 3, 32, 32\)"):
        pipe(prompt=PROMPT, init_images=image[:, :1], width=SIZE, height=SIZE)
    status, _, err = run_cli("generate", "x", "--model", folder, "--width", 36, "-o", tmp_path / "o")
    assert status == 1 and err.strip().count("\n") == 0 and "multiples of 8" in err
    status, _, err = run_cli("generate", "x", "--model", folder, "--sampler", "nope", "-o", tmp_path / "o")
    assert status == 1 and "unknown sampler 'nope'" in err
    (folder.parent / "bad").mkdir()
    (folder.parent / "bad" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    with pytest.raises(CheckpointError, match="StableDiffusion3Pipeline folder; genpix runs Stable Diffusion 1.x"):
        genpix.load_pipeline(str(folder.parent / "bad"))


def test_other_families_broken_sdxl_and_missing_tokenizer_files_are_named(tmp_path, sd1, vocab, no_tokenizer_caches):
    kind, ref, _ = sd1
    path = tmp_path / "tiny.safetensors"
    write_single_file(ref, kind, path)
    from safetensors.torch import load_file

    sd3 = {**load_file(path), "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.ones(4)}
    save_file(sd3, tmp_path / "sd3.safetensors")
    with pytest.raises(CheckpointError, match="a Stable Diffusion 3 checkpoint .*; genpix runs Stable Diffusion 1.x"):
        genpix.load_pipeline(str(tmp_path / "sd3.safetensors"))
    half_xl = {**load_file(path), "conditioner.embedders.1.model.ln_final.weight": torch.ones(4)}  # no bigG
    save_file(half_xl, tmp_path / "xl.safetensors")
    with pytest.raises(CheckpointError, match="missing tensor 'conditioner.embedders.1.model.text_projection'"):
        genpix.load_pipeline(str(tmp_path / "xl.safetensors"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "vocab.json").write_text("{}")
    with pytest.raises(TokenizerError, match=r"tokenizer files missing in .*half: merges\.txt"):
        genpix.load_pipeline(str(path), tokenizer=str(tmp_path / "half"))
    with pytest.raises(GenpixError, match="unknown prediction type 'x'; choose one of: eps, v"):
        genpix.load_pipeline(str(path), prediction="x")


def test_reduced_precision_path_and_half_on_cpu_refused(sd1, run_cli, tmp_path):
    """--half's path (U-Net and text encoder in 16 bits, the autoencoder in float32) run here in bfloat16,
    which CPUs compute; float16 itself is for CUDA, and --half on a CPU is one clear error."""
    from genpix.io.sd_loader import load_sd_components
    from genpix.pipelines.text_to_image import sd_pipeline

    kind, _, folder = sd1
    settings = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, width=SIZE, height=SIZE, seed=5)
    want = genpix.load_pipeline(str(folder))(**settings).tensors
    parts = load_sd_components(folder)
    pipe = sd_pipeline(parts, dtype=torch.bfloat16)
    assert pipe.module("unet").conv_in.weight.dtype == torch.bfloat16 and pipe.module("vae").decoder.conv_in.weight.dtype == torch.float32
    got = pipe(**settings).tensors
    assert got.dtype == torch.float32 and 0 < (got - want).abs().mean() < 0.02  # bfloat16 rounding, same image
    status, _, err = run_cli("generate", PROMPT, "--model", folder, "--half", "-o", tmp_path / "o")
    assert status == 1 and err.strip() == "genpix: error: --half needs a CUDA device (float16 is for GPUs); this runs on cpu"
