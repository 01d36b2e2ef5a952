"""Single-file SD checkpoints in the LDM layout: our rename tables against diffusers' converters.

Each test writes a tiny diffusers model's weights in the original LDM layout (through our table,
inverted), checks that diffusers' own ``convert_ldm_*_checkpoint`` reads that layout back to the
same weights (so the table agrees with diffusers, not only with itself), then converts with ours.
The last section reads the architecture back from the tensors (io/sd_config.py) and from the
CompVis inference YAML.
"""

import pickle
from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors.torch import save_file

from genpix.config import ConfigError
from genpix.io.checkpoint import CheckpointError
from genpix.io.sd_checkpoint import (UNET_PREFIX, convert_ldm_unet, convert_ldm_vae, key_map, read_state_dict,
                                     unet_table, vae_table)
from genpix.io.sd_config import configs_from_ldm_yaml, infer_unet_config, infer_vae_config
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.sd_unet import SD1, SD2, SDUNet, SDUNetConfig

UNETS = {  # SD-like level patterns: the deepest level without attention (its upsampler is .1.conv)
    "sd1-like": dict(block_out_channels=(32, 32, 64), layers_per_block=2, cross_attention_dim=16,
                     attention_head_dim=4, norm_num_groups=8,
                     down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
    "sd2-like": dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=24, attention_head_dim=(2, 4),
                     norm_num_groups=8, use_linear_projection=True, in_channels=9,  # an inpainting U-Net
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}


def same_tensors(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


def ldm_unet_layout(ref: UNet2DConditionModel) -> tuple[SDUNetConfig, dict]:
    config = SDUNetConfig.from_diffusers(dict(ref.config))
    with torch.device("meta"):
        names = key_map(SDUNet(config), unet_table(config))
    return config, {UNET_PREFIX + names[k]: v for k, v in ref.state_dict().items()}


def ldm_vae_layout(ref: DiffusersAutoencoderKL) -> tuple[AutoencoderConfig, dict]:
    config = AutoencoderConfig.from_diffusers(dict(ref.config))
    with torch.device("meta"):
        names = key_map(AutoencoderKL(config), vae_table(config))
    ldm = {}
    for key, tensor in ref.state_dict().items():
        if ".mid.attn_1." in names[key] and names[key].endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the LDM autoencoder's attention projections are 1x1 convolutions
        ldm["first_stage_model." + names[key]] = tensor
    return config, ldm


def tiny_vae() -> DiffusersAutoencoderKL:
    torch.manual_seed(0)
    return DiffusersAutoencoderKL(block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4,
                                  down_block_types=("DownEncoderBlock2D",) * 3,
                                  up_block_types=("UpDecoderBlock2D",) * 3)


@pytest.mark.parametrize("name", UNETS)
def test_ldm_unet_keys_convert_like_diffusers(name):
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**UNETS[name])
    config, ldm = ldm_unet_layout(ref)
    assert any(k.startswith(UNET_PREFIX + "output_blocks.") for k in ldm) and f"{UNET_PREFIX}time_embed.0.weight" in ldm
    same_tensors(convert_ldm_unet_checkpoint(ldm, dict(ref.config)), ref.state_dict())  # diffusers reads it back
    same_tensors(convert_ldm_unet(ldm, config), ref.state_dict())


def test_ldm_vae_keys_convert_like_diffusers():
    ref = tiny_vae()
    config, ldm = ldm_vae_layout(ref)
    assert ldm["first_stage_model.decoder.up.0.block.0.conv1.weight"].shape[0] == 8  # reversed decoder levels
    same_tensors(convert_ldm_vae_checkpoint(dict(ldm), dict(ref.config)), ref.state_dict())
    same_tensors(convert_ldm_vae(ldm, config), ref.state_dict())
    bare = {k.removeprefix("first_stage_model."): v for k, v in ldm.items()}  # an external .vae.safetensors
    leftovers = {"loss.discriminator.main.0.weight": torch.zeros(1), "model_ema.decay": torch.tensor(0.9999)}
    same_tensors(convert_ldm_vae({**bare, **leftovers}, config), ref.state_dict())
    with pytest.raises(CheckpointError, match="unexpected tensor 'decoder.up.3.block.0.conv1.weight'"):
        convert_ldm_vae({**bare, "decoder.up.3.block.0.conv1.weight": torch.zeros(1)}, config)  # a 4th level


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_loads_into_our_modules_and_matches_diffusers(tmp_path, suffix):
    torch.manual_seed(0)
    ref_unet, ref_vae = UNet2DConditionModel(**UNETS["sd1-like"]).eval(), tiny_vae().eval()
    unet_config, unet_ldm = ldm_unet_layout(ref_unet)
    vae_config, vae_ldm = ldm_vae_layout(ref_vae)
    text = {"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(16)}
    tensors = {**unet_ldm, **vae_ldm, **text}
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    else:
        torch.save({"state_dict": tensors, "global_step": 470000, "epoch": 6}, path)
    checkpoint = read_state_dict(path)
    unet, vae = SDUNet(unet_config).eval(), AutoencoderKL(vae_config).eval()
    unet.load_state_dict(convert_ldm_unet(checkpoint, unet_config))
    vae.load_state_dict(convert_ldm_vae(checkpoint, vae_config))
    g = torch.Generator().manual_seed(1)
    x, context, z = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 16, generator=g), torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, torch.tensor([5, 500]), context),
                                   ref_unet(x, torch.tensor([5, 500]), context).sample, rtol=0, atol=1e-5)
        torch.testing.assert_close(vae.decode(z), ref_vae.decode(z).sample, rtol=0, atol=1e-5)


def test_bad_tensors_are_named():
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**UNETS["sd2-like"])
    config, ldm = ldm_unet_layout(ref)
    key = UNET_PREFIX + "middle_block.1.proj_in.weight"
    with pytest.raises(CheckpointError, match=f"missing tensor '{key}'"):
        convert_ldm_unet({k: v for k, v in ldm.items() if k != key}, config)
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape \(64, 32\), the model expects \(64, 64\)"):
        convert_ldm_unet({**ldm, key: torch.zeros(64, 32)}, config)
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.diffusion_model.label_emb.0.0.weight'"):
        convert_ldm_unet({**ldm, UNET_PREFIX + "label_emb.0.0.weight": torch.zeros(1)}, config)  # SDXL's


class Payload:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_unreadable_and_code_carrying_files_are_refused(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(evil)
    assert "this pickle ran code" not in capsys.readouterr().out
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        read_state_dict(raw)
    assert "this pickle ran code" not in capsys.readouterr().out
    truncated = tmp_path / "cut.safetensors"
    save_file({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(truncated)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="unknown checkpoint type '.txt'"):
        read_state_dict(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "absent.safetensors")


# --- the architecture from the tensors or from the LDM YAML ---------------------------------------

def meta_ldm_unet(config: SDUNetConfig) -> dict:
    with torch.device("meta"):
        unet = SDUNet(config)
    names = key_map(unet, unet_table(config))
    return {UNET_PREFIX + names[k]: v for k, v in unet.state_dict().items()}


@pytest.mark.parametrize("config", [SD1, SD2, replace(SD1, in_channels=9)], ids=["sd1", "sd2", "sd1-inpainting"])
def test_full_size_architectures_are_inferred_from_shapes(config):
    assert infer_unet_config(meta_ldm_unet(config)) == config  # on the meta device: no memory
    with torch.device("meta"):
        vae = AutoencoderKL(AutoencoderConfig())
    names = key_map(vae, vae_table(vae.config))
    assert infer_vae_config({"first_stage_model." + names[k]: v for k, v in vae.state_dict().items()}) == vae.config


@pytest.mark.parametrize("name", UNETS)
def test_tiny_architectures_are_inferred_given_what_shapes_cannot_tell(name):
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**UNETS[name])
    config, ldm = ldm_unet_layout(ref)
    assert infer_unet_config(ldm, norm_num_groups=8, num_attention_heads=config.num_attention_heads) == config
    vae_config, vae_ldm = ldm_vae_layout(tiny_vae())
    assert infer_vae_config(vae_ldm, norm_num_groups=4, sample_size=32) == vae_config


def test_other_architectures_are_named():
    sd3 = {**meta_ldm_unet(SD1), UNET_PREFIX + "joint_blocks.0.context_block.attn.qkv.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"a Stable Diffusion 3 checkpoint \(it has model.diffusion_model.joint"
                                              r"_blocks.0.context_block.attn.qkv.weight\); genpix runs Stable "
                                              r"Diffusion 1.x, 2.x .* and SDXL"):
        infer_unet_config(sd3)
    with pytest.raises(CheckpointError, match="a Flux checkpoint"):
        infer_unet_config({"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="no Stable Diffusion U-Net"):
        infer_unet_config({"first_stage_model.encoder.conv_in.weight": torch.zeros(1)})


V1_INFERENCE = {"model": {"params": {  # CompVis configs/stable-diffusion/v1-inference.yaml, parsed
    "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "image_size": 64, "channels": 4,
    "conditioning_key": "crossattn", "scale_factor": 0.18215,
    "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": {
        "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_heads": 8,
        "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 768, "use_checkpoint": True,
        "legacy": False}},
    "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
        "embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                     "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                     "attn_resolutions": [], "dropout": 0.0}}}}}}
V2_INFERENCE_V = {"model": {"params": {  # Stability-AI/stablediffusion configs/stable-diffusion/v2-inference-v.yaml
    **V1_INFERENCE["model"]["params"], "parameterization": "v",
    "unet_config": {"params": {
        "use_checkpoint": True, "use_fp16": True, "image_size": 32, "in_channels": 4, "out_channels": 4,
        "model_channels": 320, "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
        "num_head_channels": 64, "use_spatial_transformer": True, "use_linear_in_transformer": True,
        "transformer_depth": 1, "context_dim": 1024, "legacy": False}}}}}


def test_ldm_yaml_maps_to_the_sd_configs():
    unet, vae, prediction = configs_from_ldm_yaml(V1_INFERENCE)
    assert (replace(unet, sample_size=64), vae.block_out_channels, prediction) == (SD1, (128, 256, 512, 512), "epsilon")
    assert vae == replace(AutoencoderConfig(), sample_size=256)
    unet, vae, prediction = configs_from_ldm_yaml(V2_INFERENCE_V)
    assert (replace(unet, sample_size=64), prediction) == (SD2, "v_prediction")
    with pytest.raises(ConfigError, match="expected model.params.unet_config.params"):
        configs_from_ldm_yaml({"model": {}})
