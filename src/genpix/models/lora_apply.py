"""LoRA / LyCORIS networks merged into a model's weights for the length of a ``with`` block.

sd-webui merges (extensions-builtin/Lora/networks.py ``network_apply_weights``: W += dW * multiplier
for every network of the prompt, restored from a CPU backup when the set changes). Here the merged
weights are new tensors swapped in by reference and the module's own tensors are put back on exit:
the restore is exact (the original tensor objects), costs nothing, and nothing leaks into the next
call. Measured against the other way, an extra low-rank product in each forward (sd-webui's
``lora_functional``), in docs/benchmarks.md.

Modules are found by kohya's names (``lora_unet_`` / ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` plus
the module's path with ``_`` for ``.``, sd-scripts ``networks/lora.py``); callers may add aliases
(the LDM names SGM-style SDXL LoRAs use). An OpenCLIP-named ``attn_in_proj`` change (q, k and v
stacked by rows, as OpenCLIP packs ``in_proj_weight``) is split in thirds over the q, k and v
projections genpix's text encoder holds separately. Linear layers, convolutions and the CPU's
prepacked convolutions (models/cpu_prepack.py) are patched; an inpainting U-Net's wider first
convolution takes a 4-channel change zero-padded, as sd-webui does.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genpix.models.cpu_prepack import PackedConv2d
from genpix.models.lora import NetworkWeightsError, module_delta, network_scale

PATCHABLE = (nn.Linear, nn.Conv2d, PackedConv2d)


@dataclass(frozen=True)
class Target:
    """The module(s) a network key changes; several when the change is stacked by rows (in_proj)."""

    modules: tuple[nn.Module, ...]
    text_encoder: bool  # multiplied by the TE weight, else by the U-Net weight


_DENSE: weakref.WeakKeyDictionary[nn.Module, tuple[torch.Tensor, torch.Tensor]] = weakref.WeakKeyDictionary()


def module_weight(module: nn.Module) -> torch.Tensor:
    """The dense weight of a Linear, Conv2d or prepacked convolution (unpacked from oneDNN's layout
    once per packed tensor)."""
    if isinstance(module, PackedConv2d) and module.weight is None:
        cached = _DENSE.get(module)
        if cached is None or cached[0] is not module.packed:
            cached = _DENSE[module] = (module.packed, module.packed.to_dense())
        return cached[1]
    return module.weight.detach()


def target_table(unet: nn.Module | None, text_encoders: dict[str, nn.Module],
                 aliases: dict[str, str] | None = None) -> dict[str, Target]:
    """Kohya key -> Target for the U-Net (``lora_unet_``) and each text encoder under its prefix
    ("lora_te_", "lora_te1_", "lora_te2_"); ``aliases`` maps more U-Net paths (LDM names) to ours."""
    table: dict[str, Target] = {}
    named = {} if unet is None else dict(unet.named_modules())
    for path, module in named.items():
        if isinstance(module, PATCHABLE):
            table["lora_unet_" + path.replace(".", "_")] = Target((module,), False)
    for theirs, ours in (aliases or {}).items():
        if ours in named and isinstance(named[ours], PATCHABLE):
            table.setdefault("lora_unet_" + theirs.replace(".", "_"), Target((named[ours],), False))
    for prefix, encoder in text_encoders.items():
        modules = dict(encoder.named_modules())
        for path, module in modules.items():
            if isinstance(module, PATCHABLE):  # transformers >= 5 names drop "text_model."
                for name in (path, path.removeprefix("text_model.")):
                    table[prefix + name.replace(".", "_")] = Target((module,), True)
            if path.endswith(".self_attn") and all(f"{path}.{p}_proj" in modules for p in "qkv"):
                # OpenCLIP names: resblocks.N.attn.in_proj (q|k|v stacked), out_proj, mlp.c_fc / c_proj
                layer = path.rsplit(".", 2)[-2]
                base = f"{prefix}model_transformer_resblocks_{layer}_"
                table[base + "attn_in_proj"] = Target(tuple(modules[f"{path}.{p}_proj"] for p in "qkv"), True)
                table[base + "attn_out_proj"] = Target((modules[f"{path}.out_proj"],), True)
                mlp = path.removesuffix("self_attn") + "mlp"
                table[base + "mlp_c_fc"] = Target((modules[f"{mlp}.fc1"],), True)
                table[base + "mlp_c_proj"] = Target((modules[f"{mlp}.fc2"],), True)
    return table


def target_deltas(target: Target, parts: dict[str, torch.Tensor], key: str) -> list[torch.Tensor]:
    """s dW for each module of ``target`` (float32), in its weight's shape."""
    weights = [module_weight(m) for m in target.modules]
    if len(weights) == 1:
        weight = weights[0]
        if weight.ndim == 4 and "lora_down.weight" in parts and parts["lora_down.weight"].ndim == 4 and \
                parts["lora_down.weight"].shape[1] < weight.shape[1]:  # a 4-channel LoRA on a 9-channel conv_in
            delta = module_delta(parts, weight[:, :parts["lora_down.weight"].shape[1]], key)
            return [F.pad(delta, (0, 0, 0, 0, 0, weight.shape[1] - delta.shape[1]))]
        return [module_delta(parts, weight, key)]
    stacked = torch.cat(weights)  # q|k|v rows, OpenCLIP's in_proj_weight
    return list(module_delta(parts, stacked, key).split([w.shape[0] for w in weights]))


def merged_weights(changes: list[tuple[Target, dict[str, torch.Tensor], float, str]],
                   buffers: dict[nn.Module, torch.Tensor] | None = None) -> dict[nn.Module, torch.Tensor]:
    """New weights W + sum of multiplier * s dW over (target, parts, multiplier, key) changes, each
    in its module's dtype and device; the modules themselves are not touched. A plain LoRA (no
    mid, no DoRA) is added as one fused W += (multiplier s) B A (``addmm_``), nothing else allocated.
    ``buffers``: tensors of an earlier merge no longer in use, reused where they fit (fresh memory
    costs page faults: 8 of the 10 s of a first SD 1.5 merge on one thread)."""
    merged: dict[nn.Module, torch.Tensor] = {}
    buffers = buffers or {}
    for target, parts, multiplier, key in changes:
        if multiplier == 0:
            continue
        for module in target.modules:
            if module not in merged:
                weight, buffer = module_weight(module), buffers.get(module)
                reuse = buffer is not None and buffer.shape == weight.shape and buffer.dtype == torch.float32
                merged[module] = buffer.copy_(weight) if reuse else weight.float().clone()
        if len(target.modules) == 1 and _plain_lora(parts, merged[target.modules[0]]):
            _add_low_rank(merged[target.modules[0]], parts, multiplier)
            continue
        for module, delta in zip(target.modules, target_deltas(target, parts, key)):
            merged[module] += delta.to(merged[module].device) * multiplier
    return {module: weight.to(module_weight(module).dtype) for module, weight in merged.items()}


def _plain_lora(parts: dict[str, torch.Tensor], weight: torch.Tensor) -> bool:
    down, up = parts.get("lora_down.weight"), parts.get("lora_up.weight")
    return (down is not None and up is not None and not {"lora_mid.weight", "dora_scale"} & set(parts)
            and up.shape[0] == weight.shape[0] and down[0].numel() == weight[0].numel())


def _add_low_rank(weight: torch.Tensor, parts: dict[str, torch.Tensor], multiplier: float) -> None:
    """W += multiplier * (alpha / r) B A in place, on W's (out, in * k * k) view (LoRA / LoCon)."""
    down, up = parts["lora_down.weight"], parts["lora_up.weight"]
    scale = network_scale(parts, down.shape[0]) * multiplier
    flat = weight.view(weight.shape[0], -1)
    flat.addmm_(up.reshape(up.shape[0], -1).to(flat), down.reshape(down.shape[0], -1).to(flat), alpha=scale)


_SWAP_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_SWAP_GUARD = threading.Lock()


def swap_lock(root: nn.Module) -> threading.RLock:
    """One lock per model: requests that merge different networks into it run one after another."""
    with _SWAP_GUARD:
        return _SWAP_LOCKS.setdefault(root, threading.RLock())


@contextmanager
def swapped_weights(merged: dict[nn.Module, torch.Tensor]) -> Iterator[None]:
    """The modules compute with ``merged`` weights inside the block; their own tensors (the very
    objects) are back on exit, even after an exception. Callers hold the model's swap_lock."""
    saved = {module: (module.weight, getattr(module, "packed", None)) for module in merged}
    try:
        for module, weight in merged.items():
            if isinstance(module, PackedConv2d):
                module.weight, module.packed = weight, None  # packed again by its next call
            else:
                module._parameters["weight"] = nn.Parameter(weight, requires_grad=False)
        yield
    finally:
        for module, (weight, packed) in saved.items():
            if isinstance(module, PackedConv2d):
                module.weight, module.packed = weight, packed
            else:
                module._parameters["weight"] = weight


def check_changes(table: dict[str, Target], modules: dict[str, dict[str, torch.Tensor]],
                  name: str) -> list[tuple[str, Target]]:
    """(key, target) of every module of a network file; keys matching nothing are one error."""
    unmatched = [key for key in modules if key not in table]
    if unmatched:
        family = _family_hint(unmatched)
        raise NetworkWeightsError(f"LoRA {name!r}: {len(unmatched)} of {len(modules)} keys match no module of this "
                                  f"model{family} (e.g. {', '.join(unmatched[:3])})")
    return [(key, table[key]) for key in modules]


def _family_hint(keys: list[str]) -> str:
    if any(k.startswith(("lora_te2_", "lora_te1_")) for k in keys) or any("input_blocks_7_1_transformer_blocks_1" in k
                                                                         for k in keys):
        return ": it looks like an SDXL LoRA"
    return ""
