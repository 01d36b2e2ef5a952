"""SRVGGNetCompact, Real-ESRGAN's compact upscaler (e.g. realesr-general-x4v3, realesr-animevideov3).

Module names follow BasicSR's ``basicsr/archs/srvgg_arch.py``: ``body`` is a flat list
``[conv(c, nf), act, (conv(nf, nf), act) x num_conv, conv(nf, c * s^2)]``; the output is
``pixel_shuffle(body(x), s) + nearest_upsample(x, s)``, so the network learns a residual over
nearest-neighbour upscaling. The activation is PReLU with one slope per channel (``body.1.weight``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import check


@dataclass(frozen=True)
class SRVGGNetConfig:
    scale: int = 4  # output size / input size (pixel-shuffle factor)
    channels: int = 3  # image channels in and out: 1 or 3
    num_features: int = 64  # nf: channels of every hidden conv
    num_conv: int = 16  # hidden nf -> nf convs (32 in realesr-general-x4v3, 16 in animevideov3)

    def __post_init__(self) -> None:
        check(1 <= self.scale <= 8, f"SRVGGNetCompact scale must be 1..8, got {self.scale}")
        check(self.channels in (1, 3), f"SRVGGNetCompact channels must be 1 or 3, got {self.channels}")
        check(self.num_features >= 1, f"SRVGGNetCompact num_features must be at least 1, got {self.num_features}")
        check(self.num_conv >= 0, f"SRVGGNetCompact num_conv must be >= 0, got {self.num_conv}")


class SRVGGNetCompact(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> (B, C, H*scale, W*scale)."""

    def __init__(self, config: SRVGGNetConfig) -> None:
        super().__init__()
        self.config = config
        nf, c, s = config.num_features, config.channels, config.scale
        layers: list[nn.Module] = [nn.Conv2d(c, nf, 3, 1, 1), nn.PReLU(nf)]
        for _ in range(config.num_conv):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(nf)]
        layers.append(nn.Conv2d(nf, c * s * s, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        s = self.config.scale
        return F.pixel_shuffle(out, s) + F.interpolate(x, scale_factor=s, mode="nearest")


__all__ = ["SRVGGNetCompact", "SRVGGNetConfig"]
