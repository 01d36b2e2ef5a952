"""Tiny preview decoder files: the published TAESD decoders and genpix's distilled ones.

Accepted layouts (``.safetensors``, or ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``):

    madebyollin/taesd ``taesd_decoder.pth`` / ``.safetensors``   1.weight, 3.conv.0.weight, ...
    the same under a ``decoder.`` prefix                         decoder.1.weight, ...
    diffusers ``AutoencoderTiny`` (whole model or decoder)      decoder.layers.0.weight, ... (index + 1)

Encoder weights in a whole-model file are ignored. The architecture is read from the shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genpix.config import ConfigError
from genpix.io.checkpoint import CheckpointError, check_state_dict
from genpix.io.sd_checkpoint import read_state_dict
from genpix.models.taesd import TinyDecoder, config_from_state_dict

DIFFUSERS_PREFIX = "decoder.layers."


def to_taesd_layout(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Any accepted layout -> TAESD's own keys (float32)."""
    if any(k.startswith(DIFFUSERS_PREFIX) for k in state):
        out = {}
        for key, value in state.items():
            if key.startswith(DIFFUSERS_PREFIX):
                index, rest = key[len(DIFFUSERS_PREFIX):].split(".", 1)
                out[f"{int(index) + 1}.{rest}"] = value  # diffusers drops TAESD's leading Clamp module
        state = out
    elif any(k.startswith("decoder.") for k in state):
        state = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
    if not state or not all(k.split(".")[0].isdigit() for k in state):
        sample = ", ".join(sorted(state)[:3]) or "no tensors"
        raise CheckpointError(f"{where} is not a tiny (TAESD) decoder: expected keys like 1.weight or "
                              f"decoder.layers.0.weight, found {sample}")
    if any(".pool." in k for k in state):
        raise CheckpointError(f"{where}: TAESD decoders with group-norm mid blocks (taef2) are not supported")
    return {k: v.float() for k, v in state.items()}


def tiny_decoder_from_state_dict(state: dict[str, torch.Tensor], where: str) -> TinyDecoder:
    """A decoder built from the shapes of ``state`` (any accepted layout) and loaded strictly."""
    state = to_taesd_layout(state, where)
    try:
        config = config_from_state_dict(state)
    except ConfigError as error:
        raise CheckpointError(f"{where}: {error}") from None
    decoder = TinyDecoder(config)
    check_state_dict(decoder.state_dict(), state, where)
    decoder.load_state_dict(state)
    return decoder.eval().requires_grad_(False)


def load_tiny_decoder(path: str | Path) -> TinyDecoder:
    """A tiny decoder file (see the module docstring) -> TinyDecoder in eval mode, float32."""
    return tiny_decoder_from_state_dict(read_state_dict(path), str(path))


def write_tiny_decoder(path: str | Path, decoder: TinyDecoder, *, half: bool = True) -> Path:
    """Save in TAESD's own key layout (what :func:`load_tiny_decoder` and TAESD's users read),
    float16 by default (a preview needs no more)."""
    from safetensors.torch import save

    from genpix.io.atomic import write_atomic

    state = {k: (v.half() if half else v.float()).contiguous().cpu() for k, v in decoder.state_dict().items()}
    data = save(state, metadata={"format": "pt"})
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))
