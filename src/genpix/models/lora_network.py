"""A trainable LoRA network beside frozen modules, in kohya's layout (sd-scripts ``networks/lora.py``).

Each chosen Linear or Conv2d W gets a :class:`LoRALayer`: y = W x + (alpha / r) B A x (Hu et al.
2021, eq. 3), A = ``lora_down`` (Linear(in, r) or Conv2d(in, r) with W's kernel, stride and
padding), B = ``lora_up`` (Linear(r, out) or a 1x1 Conv2d), A Kaiming-uniform and B zero at the
start (so training starts from the base model, as kohya's LoRAModule). The layers are named by
kohya's module keys (``lora_unet_...``, ``lora_te_...``), so :meth:`LoRANetwork.state_dict` *is* a
kohya file: ``KEY.lora_down.weight``, ``KEY.lora_up.weight``, ``KEY.alpha``, which sd-webui,
ComfyUI, diffusers' ``load_lora_weights`` and genpix's ``<lora:NAME:1>`` read.

Targets (sd-scripts' defaults): every Linear and 1x1 Conv2d inside the U-Net's spatial
transformers (``Transformer2DModel``: proj_in/out, attention q/k/v/out, feed-forward) and the text
encoder's attention and MLP; "attn" keeps only the attention projections; "transformer+conv"
(LoCon) adds the 3x3 convolutions of the resnets, downsamplers and upsamplers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

Targets = Literal["attn", "transformer", "transformer+conv"]
ATTENTION = (".to_q", ".to_k", ".to_v", ".to_out.0", ".q_proj", ".k_proj", ".v_proj", ".out_proj")


class LoRALayer(nn.Module):
    """(alpha / r) B A x for one base Linear / Conv2d (kohya's LoRAModule without the base)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        if isinstance(base, nn.Conv2d):
            self.lora_down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.lora_up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            self.lora_down = nn.Linear(base.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_up(self.lora_down(x)) * self.scale


def choose_targets(module: nn.Module, prefix: str, targets: Targets, text: bool) -> dict[str, nn.Module]:
    """Kohya key -> base module of the chosen kind under ``module`` (see the module docstring)."""
    chosen = {}
    for path, child in module.named_modules():
        linear = isinstance(child, nn.Linear) or (isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1))
        if text:
            keep = linear and (".self_attn." in path or ".mlp." in path)
        else:
            keep = linear and ".attentions." in path
        if targets == "attn":
            keep = keep and path.endswith(ATTENTION)
        if targets == "transformer+conv" and not text and isinstance(child, nn.Conv2d) and \
                child.kernel_size == (3, 3) and (".resnets." in path or "samplers." in path):
            keep = True
        if keep:
            chosen[prefix + path.replace(".", "_")] = child
    return chosen


class LoRANetwork(nn.Module):
    """LoRA layers for ``bases`` (kohya key -> frozen module); :meth:`attached` adds their output
    to the bases' own, for training (the bases' weights are never changed)."""

    def __init__(self, bases: dict[str, nn.Module], rank: int, alpha: float) -> None:
        super().__init__()
        self.bases = bases  # a plain dict: the frozen modules are not this network's parameters
        for key, base in bases.items():
            self.add_module(key, LoRALayer(base, rank, alpha))

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Inside the block each base computes W x + its LoRA layer's output."""
        hooks = [base.register_forward_hook(_adder(getattr(self, key))) for key, base in self.bases.items()]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


def _adder(layer: LoRALayer):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + layer(inputs[0])
    return hook
