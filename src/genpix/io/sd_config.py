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

SUPPORTED = ("genpix runs Stable Diffusion 1.x, 2.x (including inpainting and 768-v) and SDXL (base, refiner, "
             "inpainting) checkpoints")
UNSUPPORTED_MARKERS = {  # a key prefix that only other architectures have -> their name (diffusers'
    # single_file_utils CHECKPOINT_KEY_NAMES)
    f"{UNET_PREFIX}joint_blocks.": "Stable Diffusion 3", "joint_blocks.": "Stable Diffusion 3",
    "double_blocks.": "Flux", f"{UNET_PREFIX}double_blocks.": "Flux",
    "clip_txt_mapper.": "Stable Cascade (stage C)", "down_blocks.1.0.channelwise.": "Stable Cascade (stage B)",
    f"{UNET_PREFIX}double_layers.": "AuraFlow", "double_layers.": "AuraFlow",
}
SD2_CONTEXT_DIM = 1024  # diffusers' test for v2: attn2.to_k of the first transformer is 1024 wide
SDXL_HEAD_CHANNELS = 64  # SGM sd_xl_base.yaml / sd_xl_refiner.yaml num_head_channels


def _unsupported(checkpoint: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    for marker, name in UNSUPPORTED_MARKERS.items():
        key = next((k for k in checkpoint if k.startswith(marker)), None)
        if key is not None:
            return name, key
    return None


def recognise_family(checkpoint: dict[str, torch.Tensor]) -> str:
    """"sd" (1.x / 2.x) or "sdxl" from the keys of a single file; another family is a
    CheckpointError naming it, the key it was recognised by, and what genpix runs."""
    other = _unsupported(checkpoint)
    if other:
        raise CheckpointError(f"a {other[0]} checkpoint (it has {other[1]}); {SUPPORTED}")
    if any(k.startswith(("conditioner.embedders.", f"{UNET_PREFIX}label_emb.")) for k in checkpoint):
        return "sdxl"
    return "sd"


def infer_unet_config(checkpoint: dict[str, torch.Tensor], prefix: str = UNET_PREFIX,
                      **overrides: Any) -> SDUNetConfig:
    """The SDUNetConfig whose LDM-layout tensors ``checkpoint`` holds; ``overrides`` replace fields
    shapes cannot determine (``norm_num_groups``, ``num_attention_heads``, ``upcast_attention``...)."""
    family = recognise_family(checkpoint)
    if prefix + "input_blocks.0.0.weight" not in checkpoint:
        raise CheckpointError(f"no Stable Diffusion U-Net in this file (no {prefix}input_blocks.0.0.weight); "
                              f"{SUPPORTED}")

    def has(name: str) -> bool:
        return prefix + name in checkpoint

    widths, layers, depths = [], [], []  # per level; depth 0: no attention
    k = 1  # input_blocks.0 is conv_in; then resnets (+ transformers), a downsampler closing each level
    while has(f"input_blocks.{k}.0.op.weight") or has(f"input_blocks.{k}.0.in_layers.2.weight"):
        if not widths or has(f"input_blocks.{k - 1}.0.op.weight"):  # a new level begins
            widths.append(0)
            layers.append(0)
            depths.append(0)
        if has(f"input_blocks.{k}.0.in_layers.2.weight"):
            widths[-1] = checkpoint[prefix + f"input_blocks.{k}.0.in_layers.2.weight"].shape[0]
            layers[-1] += 1
            depths[-1] = max(depths[-1], _blocks(checkpoint, prefix + f"input_blocks.{k}.1."))
        k += 1
    if len(set(layers)) != 1 or not has("middle_block.1.proj_in.weight"):
        raise CheckpointError(f"unrecognised U-Net layout (resnets per level {layers}); {SUPPORTED}")
    per_level = layers[0] + 1
    up_attention = [any(has(f"output_blocks.{k}.1.norm.weight") for k in range(i * per_level, (i + 1) * per_level))
                    for i in range(len(widths))]
    to_k = checkpoint[prefix + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"]
    depth = tuple(d or 1 for d in depths)  # diffusers writes 1 for levels without attention
    if _blocks(checkpoint, prefix + "middle_block.1.") != depth[-1]:
        raise CheckpointError(f"unrecognised U-Net layout (middle transformer depth differs from the deepest "
                              f"level's {depth[-1]}); {SUPPORTED}")
    head_channels = SDXL_HEAD_CHANNELS if family == "sdxl" or to_k.shape[1] == SD2_CONTEXT_DIM else None
    fields: dict[str, Any] = dict(
        in_channels=checkpoint[prefix + "input_blocks.0.0.weight"].shape[1],
        out_channels=checkpoint[prefix + "out.2.weight"].shape[0],
        block_out_channels=tuple(widths), layers_per_block=layers[0],
        down_block_types=tuple("CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention),
        cross_attention_dim=to_k.shape[1], transformer_layers_per_block=depth[0] if len(set(depth)) == 1 else depth,
        use_linear_projection=checkpoint[prefix + "middle_block.1.proj_in.weight"].ndim == 2,
        num_attention_heads=heads_for(tuple(widths), head_channels) if head_channels else (8,) * len(widths))
    if has("label_emb.0.0.weight"):  # SDXL's vector conditioning (SGM num_classes: "sequential")
        fields.update(addition_embed_type="text_time", addition_time_embed_dim=256, sample_size=128,
                      projection_class_embeddings_input_dim=checkpoint[prefix + "label_emb.0.0.weight"].shape[1])
    fields.update(overrides)
    return SDUNetConfig(**fields)


def _blocks(checkpoint: dict[str, torch.Tensor], prefix: str) -> int:
    """How many transformer_blocks the spatial transformer at ``prefix`` has (0: none there)."""
    pattern = re.compile(re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
    return len({m.group(1) for key in checkpoint if (m := pattern.match(key))})


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
