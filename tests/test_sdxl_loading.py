"""Loading SDXL (io/sdxl_loader.py): tiny random base, refiner and 9-channel inpainting pipelines
(tests/sdxl_fixtures.py) as diffusers folders and as SGM single files.

The SGM layout is written by the test (the inverse of diffusers' converters) and checked against
diffusers: its ``infer_diffusers_model_type`` names each file xl_base / xl_refiner / xl_inpaint, and
its ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint`` and ``convert_open_clip_checkpoint``
read the file back to the original weights. (``StableDiffusionXLPipeline.from_single_file`` itself
fails with the installed transformers 5, whose CLIPTextModel has no ``text_model`` attribute.)
Then genpix loads both layouts and must hold the same weights.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                 convert_open_clip_checkpoint, infer_diffusers_model_type)
from safetensors.torch import save_file
from sdxl_fixtures import sgm_layout, tiny_sdxl

from genpix.io.checkpoint import CheckpointError
from genpix.io.sd_loader import load_sd_components
from genpix.io.sdxl_loader import SDXLComponents

DIFFUSERS_TYPE = {"base": "xl_base", "refiner": "xl_refiner", "inpaint": "xl_inpaint"}


@pytest.fixture(scope="module", params=list(DIFFUSERS_TYPE))
def model(request, tmp_path_factory):
    """(kind, diffusers pipeline, its folder, its SGM single file)."""
    kind, tmp = request.param, tmp_path_factory.mktemp(request.param)
    pipe = tiny_sdxl(tmp, kind)
    pipe.save_pretrained(tmp / "model")
    save_file(sgm_layout(pipe), tmp / f"tiny-xl-{kind}.safetensors")
    return kind, pipe, tmp / "model", tmp / f"tiny-xl-{kind}.safetensors"


def same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    expected = {k.removeprefix("text_model."): v for k, v in theirs.state_dict().items() if "position_ids" not in k}
    actual = {k.removeprefix("text_model."): v for k, v in ours.state_dict().items()}
    assert sorted(actual) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


def test_our_sgm_layout_is_the_one_diffusers_reads(model):
    kind, pipe, _, path = model
    from safetensors.torch import load_file

    checkpoint = load_file(path)
    assert infer_diffusers_model_type(checkpoint) == DIFFUSERS_TYPE[kind]
    unet = convert_ldm_unet_checkpoint(checkpoint, dict(pipe.unet.config))
    vae = convert_ldm_vae_checkpoint(checkpoint, dict(pipe.vae.config))
    big = "conditioner.embedders.0.model." if kind == "refiner" else "conditioner.embedders.1.model."
    text_2 = convert_open_clip_checkpoint(pipe.text_encoder_2, checkpoint, prefix=big)
    for converted, module in [(unet, pipe.unet), (vae, pipe.vae), (text_2, pipe.text_encoder_2)]:
        state = module.state_dict()
        assert sorted(converted) == sorted(state)
        assert all(torch.equal(converted[k], state[k]) for k in state)


@pytest.mark.parametrize("layout", ["folder", "single file", "ckpt"])
def test_both_layouts_load_the_same_weights(model, layout, tmp_path):
    kind, pipe, folder, path = model
    if layout == "folder":
        parts = load_sd_components(folder)
    elif layout == "ckpt":  # a weights-only pickle, read with torch.load(weights_only=True)
        from safetensors.torch import load_file

        torch.save({"state_dict": load_file(path), "global_step": 1}, tmp_path / "tiny-xl.ckpt")
        parts = load_sd_components(tmp_path / "tiny-xl.ckpt", tokenizer=folder / "tokenizer_2")  # one vocab for both
    else:
        parts = load_sd_components(path, tokenizer=folder / "tokenizer_2")
    assert isinstance(parts, SDXLComponents) and parts.kind == kind and parts.prediction == "eps"
    assert parts.refiner == (kind == "refiner") and parts.vae.config.scaling_factor == pytest.approx(0.13025)
    same_weights(parts.unet, pipe.unet)
    same_weights(parts.vae, pipe.vae)
    same_weights(parts.text_model_2, pipe.text_encoder_2)
    assert parts.tokenizer_2.pad_id == 0  # "!"
    if kind == "refiner":
        assert parts.text_model is None and parts.tokenizer is None
    else:
        same_weights(parts.text_model, pipe.text_encoder)
        assert parts.tokenizer.pad_id == parts.tokenizer.eos_id
    ids = torch.tensor([pipe.tokenizer_2("a photo of a cat", padding="max_length", max_length=77).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(parts.text_model_2(ids).pooled, pipe.text_encoder_2(ids).text_embeds,
                                   rtol=1e-5, atol=1e-5)


def test_prediction_from_a_sidecar_yaml_or_marker_key(model, tmp_path):
    kind, _, folder, path = model
    if kind != "base":
        pytest.skip("one kind is enough")
    from safetensors.torch import load_file

    tensors = load_file(path)
    marked = tmp_path / "marked.safetensors"
    save_file({**tensors, "v_pred": torch.tensor([])}, marked)  # ComfyUI's marker
    assert load_sd_components(marked, tokenizer=folder / "tokenizer").prediction == "v"
    yaml_file = tmp_path / "yaml.safetensors"
    save_file(tensors, yaml_file)
    yaml_file.with_suffix(".yaml").write_text(
        "model:\n  target: sgm.models.diffusion.DiffusionEngine\n  params:\n    denoiser_config:\n"
        "      target: sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser\n      params:\n"
        "        scaling_config:\n          target: sgm.modules.diffusionmodules.denoiser_scaling.VScaling\n")
    assert load_sd_components(yaml_file, tokenizer=folder / "tokenizer").prediction == "v"
    assert load_sd_components(path, tokenizer=folder / "tokenizer", prediction="v").prediction == "v"
    ztsnr = tmp_path / "ztsnr.safetensors"  # zero terminal SNR: v, sampled rescaled (tests/test_zero_terminal_snr.py)
    save_file({**tensors, "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, ztsnr)
    parts = load_sd_components(ztsnr, tokenizer=folder / "tokenizer")
    assert (parts.prediction, parts.noise_schedule) == ("v", "ztsnr")
    assert load_sd_components(marked, tokenizer=folder / "tokenizer").noise_schedule == "default"


@pytest.mark.parametrize("key, family", [
    ("model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight", "Stable Diffusion 3"),
    ("double_blocks.0.img_attn.norm.key_norm.scale", "Flux"),
    ("model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale", "Flux"),
    ("clip_txt_mapper.weight", "Stable Cascade"),
])
def test_other_families_get_one_line_naming_them(tmp_path, key, family):
    path = tmp_path / "other.safetensors"
    save_file({key: torch.zeros(2), "first_stage_model.encoder.conv_in.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError) as error:
        load_sd_components(path)
    message = str(error.value)
    assert "\n" not in message and f"a {family}" in message and key in message
    assert "genpix runs Stable Diffusion 1.x, 2.x (including inpainting and 768-v) and SDXL" in message


def test_missing_text_projection_is_a_clear_error(model, tmp_path):
    kind, _, folder, path = model
    if kind != "base":
        pytest.skip("one kind is enough")
    from safetensors.torch import load_file

    broken = tmp_path / "broken.safetensors"
    save_file({k: v for k, v in load_file(path).items() if not k.endswith("text_projection")}, broken)
    with pytest.raises(CheckpointError, match="missing tensor 'conditioner.embedders.1.model.text_projection'; "
                                              "SDXL's pooled text embedding needs bigG's text_projection"):
        load_sd_components(broken, tokenizer=folder / "tokenizer")


def test_text_widths_must_fit_the_unet(model):
    from dataclasses import replace

    from genpix.io.sdxl_loader import checked

    kind, _, folder, _ = model
    if kind != "base":
        pytest.skip("one kind is enough")
    parts = load_sd_components(folder)
    with pytest.raises(CheckpointError, match="the U-Net attends to 192-d text tokens but the text encoders give 128"):
        checked(replace(parts, text_model=None))
