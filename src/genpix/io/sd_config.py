"""The architecture of an LDM-layout Stable Diffusion checkpoint: from its YAML, or from its tensors.

sd-webui reads ``NAME.yaml`` beside ``NAME.safetensors`` when there is one (the CompVis
``v1-inference.yaml`` / ``v2-inference-v.yaml`` format: ``model.params.unet_config.params`` and
``first_stage_config.params.ddconfig``); :func:`configs_from_ldm_yaml` maps that, already parsed, to
our configs. Without a YAML, :func:`infer_unet_config` and :func:`infer_vae_config` read the shapes
(channels per level, resnets per level, attention levels, context width, projection kind) and take
the SD defaults for what shapes cannot tell: 32 norm groups, 8 heads for SD 1.x (768-d context),
64 channels per head for SD 2.x (1024-d context). Whether a model predicts eps or v is not in its
tensors; it comes from the YAML (``parameterization: "v"``) or the user.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch

from genpix.config import ConfigError
from genpix.io.checkpoint import CheckpointError
from genpix.io.sd_checkpoint import UNET_PREFIX, VAE_PREFIXES
from genpix.models.autoencoder import AutoencoderConfig
from genpix.models.sd_unet import SDUNetConfig, heads_for

SUPPORTED = "genpix runs Stable Diffusion 1.x and 2.x checkpoints (including inpainting and 768-v models)"
UNSUPPORTED_MARKERS = {  # a key that only other architectures have -> their name
    "conditioner.embedders.1.": "SDXL", f"{UNET_PREFIX}label_emb.": "SDXL or a class-conditioned U-Net",
    f"{UNET_PREFIX}joint_blocks.": "SD3", "double_blocks.": "Flux", f"{UNET_PREFIX}double_blocks.": "Flux",
}
SD2_CONTEXT_DIM = 1024  # diffusers' test for v2: attn2.to_k of the first transformer is 1024 wide


def _unsupported(checkpoint: dict[str, torch.Tensor]) -> str | None:
    for marker, name in UNSUPPORTED_MARKERS.items():
        if any(k.startswith(marker) for k in checkpoint):
            return name
    return None


def infer_unet_config(checkpoint: dict[str, torch.Tensor], prefix: str = UNET_PREFIX,
                      **overrides: Any) -> SDUNetConfig:
    """The SDUNetConfig whose LDM-layout tensors ``checkpoint`` holds; ``overrides`` replace fields
    shapes cannot determine (``norm_num_groups``, ``num_attention_heads``, ``upcast_attention``...)."""
    other = _unsupported(checkpoint)
    if other:
        raise CheckpointError(f"this is a {other} checkpoint; {SUPPORTED}")
    if prefix + "input_blocks.0.0.weight" not in checkpoint:
        raise CheckpointError(f"no Stable Diffusion U-Net in this file (no {prefix}input_blocks.0.0.weight); "
                              f"{SUPPORTED}")

    def has(name: str) -> bool:
        return prefix + name in checkpoint

    widths, layers, attention = [], [], []  # per level
    k = 1  # input_blocks.0 is conv_in; then resnets (+ transformers), a downsampler closing each level
    while has(f"input_blocks.{k}.0.op.weight") or has(f"input_blocks.{k}.0.in_layers.2.weight"):
        if not widths or has(f"input_blocks.{k - 1}.0.op.weight"):  # a new level begins
            widths.append(0)
            layers.append(0)
            attention.append(False)
        if has(f"input_blocks.{k}.0.in_layers.2.weight"):
            widths[-1] = checkpoint[prefix + f"input_blocks.{k}.0.in_layers.2.weight"].shape[0]
            layers[-1] += 1
            attention[-1] |= has(f"input_blocks.{k}.1.norm.weight")
        k += 1
    if len(set(layers)) != 1 or not has("middle_block.1.proj_in.weight"):
        raise CheckpointError(f"unrecognised U-Net layout (resnets per level {layers}); {SUPPORTED}")
    per_level = layers[0] + 1
    up_attention = [any(has(f"output_blocks.{k}.1.norm.weight") for k in range(i * per_level, (i + 1) * per_level))
                    for i in range(len(widths))]
    to_k = checkpoint[prefix + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"]
    depth = len({m.group(1) for key in checkpoint
                 if (m := re.match(re.escape(prefix) + r"middle_block\.1\.transformer_blocks\.(\d+)\.", key))})
    fields: dict[str, Any] = dict(
        in_channels=checkpoint[prefix + "input_blocks.0.0.weight"].shape[1],
        out_channels=checkpoint[prefix + "out.2.weight"].shape[0],
        block_out_channels=tuple(widths), layers_per_block=layers[0],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention),
        cross_attention_dim=to_k.shape[1], transformer_layers_per_block=depth,
        use_linear_projection=checkpoint[prefix + "middle_block.1.proj_in.weight"].ndim == 2,
        num_attention_heads=(heads_for(tuple(widths), 64) if to_k.shape[1] == SD2_CONTEXT_DIM
                             else (8,) * len(widths)))
    fields.update(overrides)
    return SDUNetConfig(**fields)


def infer_vae_config(checkpoint: dict[str, torch.Tensor], prefix: str | None = None,
                     **overrides: Any) -> AutoencoderConfig:
    """The AutoencoderConfig of LDM-layout autoencoder tensors (``first_stage_model.*``, ``vae.*`` or bare)."""
    if prefix is None:
        prefix = next((p for p in VAE_PREFIXES if any(k.startswith(p) for k in checkpoint)), "")
    if prefix + "encoder.conv_in.weight" not in checkpoint:
        raise CheckpointError(f"no LDM autoencoder in this file (no {prefix}encoder.conv_in.weight)")
    widths = []
    while prefix + f"encoder.down.{len(widths)}.block.0.conv1.weight" in checkpoint:
        widths.append(checkpoint[prefix + f"encoder.down.{len(widths)}.block.0.conv1.weight"].shape[0])
    layers = 0
    while prefix + f"encoder.down.0.block.{layers}.conv1.weight" in checkpoint:
        layers += 1
    fields: dict[str, Any] = dict(
        in_channels=checkpoint[prefix + "encoder.conv_in.weight"].shape[1],
        out_channels=checkpoint[prefix + "decoder.conv_out.weight"].shape[0],
        block_out_channels=tuple(widths), layers_per_block=layers,
        latent_channels=checkpoint[prefix + "decoder.conv_in.weight"].shape[1])
    fields.update(overrides)
    return AutoencoderConfig(**fields)


Prediction = Literal["epsilon", "v_prediction"]


def configs_from_ldm_yaml(config: dict[str, Any]) -> tuple[SDUNetConfig, AutoencoderConfig, Prediction]:
    """(U-Net, autoencoder, prediction type) from a parsed CompVis inference YAML."""
    try:
        model = config["model"]["params"]
        unet, ddconfig = model["unet_config"]["params"], model["first_stage_config"]["params"]["ddconfig"]
    except (KeyError, TypeError):
        raise ConfigError("LDM YAML: expected model.params.unet_config.params and "
                          "model.params.first_stage_config.params.ddconfig") from None
    if "num_classes" in unet or "adm_in_channels" in unet:
        raise ConfigError(f"LDM YAML: a class- or vector-conditioned U-Net (num_classes); {SUPPORTED}")
    widths = tuple(unet["model_channels"] * m for m in unet["channel_mult"])
    resolutions = set(unet.get("attention_resolutions", ()))
    # level i works at 1 / 2**i of the latent resolution; attention where that factor is listed
    attention = [2 ** i in resolutions for i in range(len(widths))]
    head_channels = unet.get("num_head_channels", -1)
    heads = heads_for(widths, head_channels) if head_channels > 0 else (unet["num_heads"],) * len(widths)
    context = unet.get("context_dim")
    unet_config = SDUNetConfig(
        sample_size=unet.get("image_size", 64), in_channels=unet["in_channels"], out_channels=unet["out_channels"],
        block_out_channels=widths, layers_per_block=unet["num_res_blocks"],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        num_attention_heads=heads, cross_attention_dim=context[0] if isinstance(context, list) else context,
        transformer_layers_per_block=unet.get("transformer_depth", 1),
        use_linear_projection=unet.get("use_linear_in_transformer", False))
    vae_config = AutoencoderConfig(
        in_channels=ddconfig["in_channels"], out_channels=ddconfig["out_ch"],
        block_out_channels=tuple(ddconfig["ch"] * m for m in ddconfig["ch_mult"]),
        layers_per_block=ddconfig["num_res_blocks"], latent_channels=ddconfig["z_channels"],
        scaling_factor=float(model.get("scale_factor", 0.18215)),
        sample_size=unet_config.sample_size * 2 ** (len(ddconfig["ch_mult"]) - 1))
    parameterization = model.get("parameterization", "eps")
    if parameterization not in ("eps", "v"):
        raise ConfigError(f"LDM YAML: parameterization {parameterization!r} is not one of 'eps', 'v'")
    prediction: Prediction = "v_prediction" if parameterization == "v" else "epsilon"
    return unet_config, vae_config, prediction
