"""The weight change dW of one module of a LoRA / LyCORIS network, as sd-webui computes it.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3): W' = W + s B A,
with A = ``lora_down`` [r, in(, k, k)], B = ``lora_up`` [out, r(, 1, 1)] and s = alpha / r
(kohya's sd-scripts ``networks/lora.py``; no alpha: s = 1). LoCon applies the same to 3x3
convolutions: dW = (B flattened) (A flattened) reshaped to [out, in, k, k]; with ``lora_mid``
(CP decomposition) dW = mid x_0 B x_1 A (sd-webui ``lyco_helpers.rebuild_cp_decomposition``).

LyCORIS (Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to
Model Evaluation"):

- LoHa (FedPara, Hyeon-Woo et al. 2022): dW = (W1a W1b) * (W2a W2b) (Hadamard product), s = alpha / r
  with r = W1b's rows; with Tucker cores ``hada_t1``/``t2`` each factor is t x_1 W_b x_0 W_a
  (``make_weight_cp``);
- LoKr: dW = W1 kron W2, each factor given whole or as a product of two, W2 optionally with a
  Tucker core; s = alpha / r when a factor is a product (r its inner size), else 1;
- full (``diff``): dW itself, s = 1.

DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", eq. 5) as sd-webui's
``apply_weight_decompose``: M = W + s dW, W' = m M / ||M||, dW := W' - W, with the norm taken per
input column when ``dora_scale`` is [1, in, ...] (sd-webui's convention) or per output row when it
is [out, 1, ...] (LyCORIS' ``wd_on_out`` and PEFT's).

The multiplier (the prompt's ``<lora:NAME:w>``) scales the final dW, as sd-webui's
``finalize_updown``. ``scale`` in the file overrides alpha / r.
"""

from __future__ import annotations

import torch

from genpix.errors import GenpixError

KINDS = {"lora": ("lora_down.weight", "lora_up.weight"), "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
         "lokr": (), "full": ("diff",)}
KNOWN_PARTS = frozenset({"lora_down.weight", "lora_up.weight", "lora_mid.weight", "alpha", "scale", "dora_scale",
                         "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "lokr_w1",
                         "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "diff"})


class NetworkWeightsError(GenpixError, ValueError):
    """A module's LoRA / LyCORIS tensors are incomplete or do not fit the module they name."""


def network_kind(parts: dict[str, torch.Tensor], key: str) -> str:
    """'lora', 'loha', 'lokr' or 'full' from the parts present (sd-webui's module_types order)."""
    unknown = sorted(set(parts) - KNOWN_PARTS)
    if unknown:
        raise NetworkWeightsError(f"{key}: unsupported network tensors {', '.join(unknown[:3])} (LoRA, LoCon, "
                                  f"LoHa, LoKr, full and DoRA are supported)")
    if all(p in parts for p in KINDS["lora"]):
        return "lora"
    if all(p in parts for p in KINDS["loha"]):
        return "loha"
    has_1 = "lokr_w1" in parts or {"lokr_w1_a", "lokr_w1_b"} <= set(parts)
    has_2 = "lokr_w2" in parts or {"lokr_w2_a", "lokr_w2_b"} <= set(parts)
    if has_1 and has_2:
        return "lokr"
    if "diff" in parts:
        return "full"
    raise NetworkWeightsError(f"{key}: incomplete network tensors ({', '.join(sorted(parts))})")


def _flat(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def cp_weight(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """Tucker / CP rebuild t x_1 wb x_0 wa (sd-webui ``lyco_helpers.make_weight_cp``)."""
    temp = torch.einsum("ijkl,jr->irkl", t, wb)
    return torch.einsum("ijkl,ir->rjkl", temp, wa)


def lora_updown(parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(B A, r) of LoRA / LoCon; CP-decomposed with ``lora_mid``."""
    up, down = parts["lora_up.weight"], parts["lora_down.weight"]
    if "lora_mid.weight" in parts:
        return torch.einsum("nmkl,in,mj->ijkl", parts["lora_mid.weight"], _flat(up), _flat(down)), down.shape[0]
    updown = _flat(up) @ _flat(down)  # [out, in * k * k]
    shape = (up.shape[0], *down.shape[1:]) if down.ndim == 4 else updown.shape
    return updown.reshape(shape), down.shape[0]


def loha_updown(parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """((W1a W1b) * (W2a W2b), r) of LoHa, with Tucker cores when present."""
    w1a, w1b, w2a, w2b = (parts[k] for k in KINDS["loha"])
    if "hada_t1" in parts:
        shape = (w1a.shape[1], w1b.shape[1], *parts["hada_t1"].shape[2:])
        first = cp_weight(parts["hada_t1"], w1a, w1b)
    else:
        shape = (w1a.shape[0], w1b.shape[1], *w1b.shape[2:])
        first = (_flat(w1a) @ _flat(w1b)).reshape(shape)
    second = (cp_weight(parts["hada_t2"], w2a, w2b) if "hada_t2" in parts
              else (_flat(w2a) @ _flat(w2b)).reshape(shape))
    return first * second, w1b.shape[0]


def lokr_updown(parts: dict[str, torch.Tensor], shape: torch.Size) -> tuple[torch.Tensor, int | None]:
    """(W1 kron W2 reshaped to the module's weight, r or None when both factors are whole)."""
    rank = None
    w1 = parts.get("lokr_w1")
    if w1 is None:
        w1, rank = parts["lokr_w1_a"] @ parts["lokr_w1_b"], parts["lokr_w1_b"].shape[0]
    w2 = parts.get("lokr_w2")
    if w2 is None:
        a, b = parts["lokr_w2_a"], parts["lokr_w2_b"]
        w2 = cp_weight(parts["lokr_t2"], a, b) if "lokr_t2" in parts else a @ b
        rank = rank if rank is not None else b.shape[0]
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2.contiguous()).reshape(shape), rank


def network_scale(parts: dict[str, torch.Tensor], rank: int | None) -> float:
    """``scale`` if stored, else alpha / r, else 1 (sd-webui ``NetworkModule.calc_scale``)."""
    if "scale" in parts:
        return float(parts["scale"])
    if rank is not None and "alpha" in parts:
        return float(parts["alpha"]) / rank
    return 1.0


def module_delta(parts: dict[str, torch.Tensor], weight: torch.Tensor, key: str = "module") -> torch.Tensor:
    """s dW for the module whose current weight is ``weight`` (before the multiplier), in its shape
    and float32; DoRA's decomposition applied when ``dora_scale`` is present."""
    kind = network_kind(parts, key)
    parts = {k: v.float() for k, v in parts.items()}
    if kind == "lora":
        updown, rank = lora_updown(parts)
    elif kind == "loha":
        updown, rank = loha_updown(parts)
    elif kind == "lokr":
        updown, rank = lokr_updown(parts, weight.shape)
    else:
        updown, rank = parts["diff"], None
    if updown.numel() != weight.numel():
        raise NetworkWeightsError(f"{key}: the network's change has shape {tuple(updown.shape)} but the module's "
                                  f"weight is {tuple(weight.shape)}; the LoRA is for another model family")
    updown = updown.reshape(weight.shape) * network_scale(parts, rank)
    if "dora_scale" in parts:
        updown = weight_decompose(updown, weight.float(), parts["dora_scale"])
    return updown


def weight_decompose(updown: torch.Tensor, weight: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA: m (W + dW) / ||W + dW|| - W, the norm per input column or per output row as the
    magnitude's shape says ([1, in, ...] or [out, 1, ...] / [out])."""
    merged = weight + updown
    per_output = magnitude.numel() == weight.shape[0] and (magnitude.ndim == 1 or magnitude.shape[0] != 1)
    if per_output:
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1)
        shape = (-1,) + (1,) * (weight.ndim - 1)
    elif magnitude.numel() == weight.shape[1]:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        shape = (1, -1) + (1,) * (weight.ndim - 2)
    else:
        raise NetworkWeightsError(f"dora_scale of shape {tuple(magnitude.shape)} fits neither the rows nor the "
                                  f"columns of a {tuple(weight.shape)} weight")
    return merged * (magnitude.reshape(shape) / norm.reshape(shape)) - weight
