"""The text encoder of an LDM-layout Stable Diffusion checkpoint, as genpix's CLIPTextModel.

SD 1.x stores openai's CLIP ViT-L/14 text tower (Radford et al. 2021) under
``cond_stage_model.transformer.`` in transformers' own names, so loading it strips a prefix
(diffusers' ``convert_ldm_clip_checkpoint``). SD 2.x stores OpenCLIP's ViT-H/14 (Cherti et al.
2023) under ``cond_stage_model.model.`` in open_clip's names: ``resblocks.N`` with a fused
``attn.in_proj_weight`` (q, k and v stacked by rows), ``ln_1``/``ln_2``, ``mlp.c_fc``/``c_proj``,
``ln_final``, ``positional_embedding``. :func:`convert_open_clip` renames and splits them as
diffusers' ``convert_open_clip_checkpoint`` does, and, since SD 2.x conditions on the penultimate
layer (``layer: "penultimate"`` in v2-inference.yaml), keeps every layer but the last followed by
``ln_final``: the 23-layer text encoder of diffusers' SD 2.x folders. ``text_projection`` and
``logit_scale`` belong to CLIP's contrastive head and are not used.

SDXL (SGM layout) stores ViT-L under ``conditioner.embedders.0.transformer.`` (transformers names)
and OpenCLIP ViT-bigG/14 under ``conditioner.embedders.1.model.`` (the refiner: bigG alone, under
``conditioner.embedders.0.model.``), all 32 layers kept and ``text_projection`` (used as x @ P)
needed for the pooled vector: :func:`find_sdxl_text_encoders`. :func:`to_open_clip` writes a
text tower back in open_clip's names (tests and benchmarks build SGM files with it).

What the tensors cannot tell is fixed by the CLIP families: 64 channels per attention head (ViT-L/14
text: 768 / 12; ViT-H/14 text: 1024 / 16), quick_gelu for openai CLIP and gelu for OpenCLIP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from genpix.io.checkpoint import CheckpointError
from genpix.models.text import CLIPTextConfig

CLIP_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_BIG_PREFIXES = ("conditioner.embedders.1.model.", "conditioner.embedders.0.model.")  # base, refiner
HEAD_CHANNELS = 64  # channels per attention head in every CLIP text tower SD uses

# open_clip -> transformers, inside one resblock
OPEN_CLIP_LAYER = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "mlp.c_fc.": "mlp.fc1.",
                   "mlp.c_proj.": "mlp.fc2.", "attn.out_proj.": "self_attn.out_proj."}


@dataclass(frozen=True)
class LDMTextEncoder:
    """A text encoder found in a checkpoint: transformers-named weights and their config."""

    kind: Literal["clip", "open_clip"]  # SD 1.x (openai CLIP) or SD 2.x (OpenCLIP)
    state: dict[str, torch.Tensor]  # transformers CLIPTextModel names, without "text_model."
    config: CLIPTextConfig


def find_text_encoder(checkpoint: dict[str, torch.Tensor], *, eos_token_id: int = 49407,
                      layer: Literal["last", "penultimate"] = "penultimate") -> LDMTextEncoder:
    """The text encoder of an LDM checkpoint, SD 1.x CLIP or SD 2.x OpenCLIP (``layer`` applies to
    OpenCLIP: "penultimate" as SD 2.x uses it, or "last")."""
    for prefix in CLIP_PREFIXES:
        state = {k[len(prefix):].removeprefix("text_model."): v for k, v in checkpoint.items()
                 if k.startswith(prefix) and not k.endswith("position_ids")}
        if state:
            return LDMTextEncoder("clip", state, infer_text_config(state, "quick_gelu", eos_token_id))
    if any(k.startswith(OPEN_CLIP_PREFIX) for k in checkpoint):
        state = convert_open_clip(checkpoint, keep_last=layer == "last")
        # open_clip pools at the largest token id (eos); eos_token_id 2 selects that rule
        return LDMTextEncoder("open_clip", state, infer_text_config(state, "gelu", 2))
    raise CheckpointError("no text encoder in this checkpoint (no cond_stage_model.transformer.* for SD 1.x "
                          "or cond_stage_model.model.* for SD 2.x)")


def find_sdxl_text_encoders(checkpoint: dict[str, torch.Tensor]) -> tuple[LDMTextEncoder | None, LDMTextEncoder,
                                                                          int]:
    """(ViT-L or None for the refiner, bigG with ``text_projection.weight``, bigG's projection width)
    of an SGM-layout SDXL checkpoint."""
    big = next((p for p in SDXL_BIG_PREFIXES if p + "ln_final.weight" in checkpoint), None)
    if big is None:
        raise CheckpointError("an SDXL checkpoint without its OpenCLIP ViT-bigG text encoder (no "
                              "conditioner.embedders.1.model.ln_final.weight, or embedders.0 for a refiner)")
    if big + "text_projection" not in checkpoint:
        raise CheckpointError(f"SDXL text encoder: missing tensor {big + 'text_projection'!r}; SDXL's pooled "
                              f"text embedding needs bigG's text_projection")
    state = convert_open_clip(checkpoint, prefix=big, keep_last=True)
    projection = checkpoint[big + "text_projection"]  # (width, projection): used as x @ P
    state["text_projection.weight"] = projection.T
    # open_clip pools at the largest token id (eos); eos_token_id 2 selects that rule
    g = LDMTextEncoder("open_clip", state, infer_text_config(state, "gelu", 2))
    prefix = CLIP_PREFIXES[1]
    state_l = {k[len(prefix):].removeprefix("text_model."): v for k, v in checkpoint.items()
               if k.startswith(prefix) and not k.endswith("position_ids")}
    if big == SDXL_BIG_PREFIXES[0] and not state_l:
        raise CheckpointError(f"SDXL checkpoint: bigG is at {big} but the CLIP ViT-L text encoder "
                              f"({prefix}*) is missing")
    l_encoder = LDMTextEncoder("clip", state_l, infer_text_config(state_l, "quick_gelu", 49407)) if state_l else None
    return l_encoder, g, projection.shape[1]


def _layer_count(state: dict[str, torch.Tensor], pattern: str) -> int:
    numbers = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(numbers) + 1 if numbers else 0


def convert_open_clip(checkpoint: dict[str, torch.Tensor], prefix: str = OPEN_CLIP_PREFIX,
                      keep_last: bool = False) -> dict[str, torch.Tensor]:
    """open_clip text-tower tensors -> transformers CLIPTextModel names (diffusers'
    ``convert_open_clip_checkpoint``); the last resblock is dropped unless ``keep_last``."""
    def get(name: str) -> torch.Tensor:
        if prefix + name not in checkpoint:
            raise CheckpointError(f"text encoder: missing tensor {prefix + name!r}")
        return checkpoint[prefix + name]

    layers = _layer_count(checkpoint, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    if layers < 2 and not keep_last:
        raise CheckpointError(f"text encoder: {layers} OpenCLIP layers, the penultimate one needs at least 2")
    state = {"embeddings.token_embedding.weight": get("token_embedding.weight"),
             "embeddings.position_embedding.weight": get("positional_embedding"),
             "final_layer_norm.weight": get("ln_final.weight"), "final_layer_norm.bias": get("ln_final.bias")}
    for i in range(layers if keep_last else layers - 1):
        ldm, ours = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = get(f"{ldm}attn.in_proj_{kind}").chunk(3, dim=0)  # rows: q, then k, then v
            state.update({f"{ours}self_attn.q_proj.{kind}": q, f"{ours}self_attn.k_proj.{kind}": k,
                          f"{ours}self_attn.v_proj.{kind}": v})
            for theirs, name in OPEN_CLIP_LAYER.items():
                state[f"{ours}{name}{kind}"] = get(f"{ldm}{theirs}{kind}")
    return state


def to_open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers-named text-tower weights (``text_model.`` optional; ``text_projection.weight`` when
    there is one) in open_clip's names under ``prefix``, every layer kept: the inverse of
    :func:`convert_open_clip` (q, k, v stacked by rows into ``attn.in_proj_*``; ``text_projection``
    stored transposed, used as x @ P; ``logit_scale`` as open_clip saves it), for writing SGM-layout
    SDXL files (tests, benchmarks)."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    embedding = state["embeddings.token_embedding.weight"]
    tensors = {prefix + "token_embedding.weight": embedding,
               prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
               prefix + "ln_final.weight": state["final_layer_norm.weight"],
               prefix + "ln_final.bias": state["final_layer_norm.bias"],
               prefix + "logit_scale": torch.tensor(4.6, dtype=embedding.dtype)}  # about ln(100), CLIP's clamp
    if "text_projection.weight" in state:
        tensors[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()
    for i in range(_layer_count(state, r"encoder\.layers\.(\d+)\.")):
        ours, ldm = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            tensors[f"{ldm}attn.in_proj_{kind}"] = torch.cat([state[f"{ours}self_attn.{x}_proj.{kind}"] for x in "qkv"])
            for theirs, name in OPEN_CLIP_LAYER.items():
                tensors[f"{ldm}{theirs}{kind}"] = state[f"{ours}{name}{kind}"]
    return tensors


def infer_text_config(state: dict[str, torch.Tensor], hidden_act: Literal["quick_gelu", "gelu"],
                      eos_token_id: int) -> CLIPTextConfig:
    """The CLIPTextConfig of transformers-named text-tower tensors (no ``text_model.`` prefix)."""
    try:
        vocab, width = state["embeddings.token_embedding.weight"].shape
        positions = state["embeddings.position_embedding.weight"].shape[0]
        intermediate = state["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as missing:
        raise CheckpointError(f"text encoder: missing tensor {missing.args[0]!r}") from None
    return CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=intermediate,
                          num_hidden_layers=_layer_count(state, r"encoder\.layers\.(\d+)\."),
                          num_attention_heads=max(1, width // HEAD_CHANNELS), max_position_embeddings=positions,
                          hidden_act=hidden_act, eos_token_id=eos_token_id)
