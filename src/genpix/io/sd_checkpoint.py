"""Stable Diffusion single-file checkpoints in the original LDM key layout (Rombach et al. 2022).

A CompVis / sd-webui checkpoint holds the U-Net under ``model.diffusion_model.`` (``input_blocks``,
``middle_block``, ``output_blocks``), the autoencoder under ``first_stage_model.`` (``encoder.down``,
``decoder.up`` in reverse order, ``mid.attn_1`` with 1x1-convolution projections) and the text
encoder under ``cond_stage_model.``. genpix's modules use diffusers' names, so loading is a rename.

The rename tables are built from the architecture, one prefix pair per submodule (the same rules as
diffusers' ``convert_ldm_unet_checkpoint`` and ``convert_ldm_vae_checkpoint``): the keys of our
module (enumerated on the meta device, nothing allocated) map to LDM keys, so every missing,
unexpected or wrongly shaped tensor is reported by name. Files are memory-mapped by safetensors;
``.ckpt`` pickles only through ``torch.load(weights_only=True, mmap=True)``, which refuses pickles
that carry code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from genpix.io.checkpoint import CheckpointError
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.sd_unet import SDUNet, SDUNetConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")

# submodule renames inside one block: ours -> LDM
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

Table = list[tuple[str, str, dict[str, str]]]  # (our prefix, LDM prefix, inner renames)


def unet_table(config: SDUNetConfig) -> Table:
    """Prefix pairs from SDUNet (diffusers) names to the LDM ``openaimodel.UNetModel`` names."""
    table: Table = [("time_embedding.linear_1.", "time_embed.0.", {}),
                    ("time_embedding.linear_2.", "time_embed.2.", {}), ("conv_in.", "input_blocks.0.0.", {}),
                    ("conv_norm_out.", "out.0.", {}), ("conv_out.", "out.2.", {})]
    if config.addition_embed_type == "text_time":  # SDXL's vector conditioning MLP (SGM: num_classes "sequential")
        table += [("add_embedding.linear_1.", "label_emb.0.0.", {}), ("add_embedding.linear_2.", "label_emb.0.2.", {})]
    levels, layers = len(config.block_out_channels), config.layers_per_block
    k = 1  # input_blocks.0 is conv_in
    for i, kind in enumerate(config.down_block_types):
        for j in range(layers):
            table.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0.", UNET_RESNET))
            if kind == "CrossAttnDownBlock2D":
                table.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{k}.1.", {}))
            k += 1
        if i < levels - 1:
            table.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{k}.0.op.", {}))
            k += 1
    table += [("mid_block.resnets.0.", "middle_block.0.", UNET_RESNET),
              ("mid_block.attentions.0.", "middle_block.1.", {}),
              ("mid_block.resnets.1.", "middle_block.2.", UNET_RESNET)]
    k = 0
    for i, kind in enumerate(config.up_block_types):
        attention = kind == "CrossAttnUpBlock2D"
        for j in range(layers + 1):
            table.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0.", UNET_RESNET))
            if attention:
                table.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{k}.1.", {}))
            if j == layers and i < levels - 1:  # the upsampler follows the level's last resnet (and attention)
                upsampler = f"output_blocks.{k}.{2 if attention else 1}.conv."
                table.append((f"up_blocks.{i}.upsamplers.0.conv.", upsampler, {}))
            k += 1
    return table


def vae_table(config: AutoencoderConfig) -> Table:
    """Prefix pairs from AutoencoderKL (diffusers) names to the LDM ``AutoencoderKL`` names."""
    levels, layers = len(config.block_out_channels), config.layers_per_block
    table: Table = [("quant_conv.", "quant_conv.", {}), ("post_quant_conv.", "post_quant_conv.", {})]
    for part in ("encoder", "decoder"):
        table += [(f"{part}.conv_in.", f"{part}.conv_in.", {}), (f"{part}.conv_out.", f"{part}.conv_out.", {}),
                  (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
                  (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", VAE_RESNET),
                  (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", VAE_RESNET),
                  (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", VAE_ATTENTION)]
    for i in range(levels):
        table += [(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", VAE_RESNET)
                  for j in range(layers)]
        if i < levels - 1:
            table.append((f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.", {}))
        ldm = levels - 1 - i  # the LDM decoder numbers its levels from the finest
        table += [(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{ldm}.block.{j}.", VAE_RESNET)
                  for j in range(layers + 1)]
        if i < levels - 1:
            table.append((f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{ldm}.upsample.conv.", {}))
    return table


def key_map(module: nn.Module, table: Table) -> dict[str, str]:
    """Every state_dict key of ``module`` -> its LDM key (the longest matching prefix wins)."""
    ordered = sorted(table, key=lambda row: len(row[0]), reverse=True)
    mapping = {}
    for key in module.state_dict():
        row = next((r for r in ordered if key.startswith(r[0])), None)
        if row is None:
            raise KeyError(f"no LDM name for {key!r}")  # a gap in the table: a bug, not bad input
        ours, ldm, inner = row
        path, _, leaf = key[len(ours):].rpartition(".")
        mapping[key] = ldm + (f"{inner.get(path, path)}." if path else "") + leaf
    return mapping


def _convert(checkpoint: dict[str, torch.Tensor], prefix: str, module: nn.Module, table: Table,
             what: str) -> dict[str, torch.Tensor]:
    mapping = key_map(module, table)
    expected = module.state_dict()
    converted = {}
    for key, ldm_key in mapping.items():
        name = prefix + ldm_key
        if name not in checkpoint:
            raise CheckpointError(f"{what}: missing tensor {name!r} (for {key})")
        tensor, shape = checkpoint[name], expected[key].shape
        if tensor.shape != shape and tensor.ndim > len(shape) and tensor.shape[len(shape):] == (1,) * (
                tensor.ndim - len(shape)):
            tensor = tensor.reshape(shape)  # a 1x1 convolution's weight used as a linear layer's
        if tensor.shape != shape:
            raise CheckpointError(f"{what}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"the model expects {tuple(shape)}")
        converted[key] = tensor
    known = {prefix + k for k in mapping.values()}
    # without a prefix (a bare VAE file) only our own parts count: training leftovers such as
    # loss.discriminator.* or model_ema.decay are not weights of this module
    parts = {k.split(".")[0] for k in mapping.values()} if not prefix else None
    unexpected = sorted(k for k in checkpoint if k.startswith(prefix) and k not in known
                        and (parts is None or k.split(".")[0] in parts))
    if unexpected:
        raise CheckpointError(f"{what}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all); "
                              f"this architecture is not the one configured")
    return converted


def convert_ldm_unet(checkpoint: dict[str, torch.Tensor], config: SDUNetConfig,
                     prefix: str = UNET_PREFIX) -> dict[str, torch.Tensor]:
    """The SDUNet state_dict from an LDM checkpoint's ``model.diffusion_model.*`` tensors."""
    with torch.device("meta"):
        module = SDUNet(config)
    return _convert(checkpoint, prefix, module, unet_table(config), "U-Net")


def convert_ldm_vae(checkpoint: dict[str, torch.Tensor], config: AutoencoderConfig,
                    prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The AutoencoderKL state_dict from ``first_stage_model.*`` (or ``vae.*``, or a bare VAE file
    such as sd-webui's external ``.vae.safetensors`` when no prefix is present)."""
    if prefix is None:
        prefix = next((p for p in VAE_PREFIXES if any(k.startswith(p) for k in checkpoint)), "")
    with torch.device("meta"):
        module = AutoencoderKL(config)
    return _convert(checkpoint, prefix, module, vae_table(config), "autoencoder")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, or of a ``.ckpt`` / ``.pt`` pickle read with
    ``torch.load(weights_only=True)`` (its ``state_dict`` entry when it has one).

    Both are memory-mapped, privately (copy-on-write), in their stored dtypes: the tensors are views
    of the file's pages, read when first touched and counted as file-backed memory, not anonymous
    (safetensors' ``load_file``; reading all of a 1.5 GiB float32 file grew RssAnon by 0 MiB where
    its ``pread`` backend grows it by the file's size). safetensors validates the header (length,
    JSON, dtypes, offsets within the file, neither overlapping nor leaving gaps); any fault is one
    :class:`CheckpointError` naming the file. ``assign_weights`` keeps float32 tensors as mapped and
    converts half precision once."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    if path.suffix not in (".ckpt", ".pt", ".pth", ".bin"):
        raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r}; use .safetensors or .ckpt")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:  # weights_only refuses anything but tensors and plain data
        raise CheckpointError(f"{path} was refused: it is not a plain weights file ({str(error).splitlines()[0]})") \
            from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # a training checkpoint: the weights sit beside global_step and the like
    tensors = {k: v for k, v in data.items() if torch.is_tensor(v)} if isinstance(data, dict) else {}
    if not tensors:
        raise CheckpointError(f"{path} does not hold a dictionary of tensors")
    return tensors
