"""Convolution weights reordered once for oneDNN, for inference on the CPU.

PyTorch's CPU convolution hands a plain (out, in, kh, kw) weight to oneDNN, which reorders it into its
blocked layout on every call. For the wide, low-resolution convolutions of a Stable Diffusion U-Net
(1280 channels at 8x8 latents) the reorder costs as much as the arithmetic: measured on this project's
2-core AVX-512 machine, one 1280->1280 3x3 convolution at 8x8 ran at 59 GFLOP/s plain and 114
GFLOP/s prepacked (benchmarks/bench_sd_unet.py measures the whole U-Net). PyTorch's inductor does the
same "weight prepacking" when it freezes a graph (``torch._inductor.config.freezing``); this does it
eagerly, with no compilation, through the same operators (``mkldnn_reorder_conv2d_weight``,
``mkldnn._convolution_pointwise``).

:func:`prepack_convolutions` swaps every eligible ``nn.Conv2d`` of a module for a
:class:`PackedConv2d` holding only the reordered weight: inference only (no gradients, no
``state_dict`` round trip, the CPU only), results equal to the plain convolution's to float32 rounding.
"""

from __future__ import annotations

import torch
from torch import nn


class PackedConv2d(nn.Module):
    """An inference-only ``nn.Conv2d`` whose weight oneDNN has reordered once, at construction."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not can_prepack(conv):
            raise ValueError(f"cannot prepack {conv!r}: it needs float32 CPU weights, zero padding given in "
                             f"numbers, and oneDNN")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.weight: torch.Tensor | None = conv.weight.detach()  # until the first call packs it
        self.packed: torch.Tensor | None = None
        self.kernel_size = tuple(conv.kernel_size)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:  # oneDNN picks the weight layout for this input size; any size works after
            self.packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.to_mkldnn(), self.padding, self.stride, self.dilation, self.groups, list(x.shape))
            self.weight = None
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, self.bias, self.padding, self.stride, self.dilation, self.groups, "none", [], "")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, prepacked")


def can_prepack(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain CPU float32 ``nn.Conv2d`` oneDNN can take prepacked."""
    return (type(conv) is nn.Conv2d and torch.backends.mkldnn.is_available()
            and conv.weight.device.type == "cpu" and conv.weight.dtype == torch.float32
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def prepack_convolutions(module: nn.Module) -> int:
    """Replaces, in place, every prepackable ``nn.Conv2d`` under ``module`` by a :class:`PackedConv2d`;
    returns how many. For inference: the module can no longer be trained or saved."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if can_prepack(child):
                setattr(parent, name, PackedConv2d(child))
                count += 1
    return count


def prepack_on_cpu(device: torch.device, *modules: nn.Module) -> None:
    """Prepacks the convolutions of inference ``modules`` when they run on the CPU (a no-op elsewhere)."""
    if device.type == "cpu":
        for module in modules:
            prepack_convolutions(module)
