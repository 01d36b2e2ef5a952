"""RRDBNet, the generator of ESRGAN (Wang et al. 2018) and Real-ESRGAN (Wang et al. 2021).

Module names follow BasicSR's ``basicsr/archs/rrdbnet_arch.py`` (``conv_first``, ``body.N.rdbK.convJ``,
``conv_body``, ``conv_upK``, ``conv_hr``, ``conv_last``), so a BasicSR / Real-ESRGAN state dict loads
as is; the old ESRGAN ``model.N`` layout is renamed in :mod:`genpix.io.upscaler_file`.

Residual dense block (paper Fig. 4): ``x_k = lrelu(conv_k([x, x_1, ..., x_{k-1}]))`` for k = 1..4,
``x_5 = conv_5([x, x_1..x_4])``, output ``x_5 * 0.2 + x`` (residual scaling beta = 0.2); RRDB chains
three of them and scales again: ``rdb3(rdb2(rdb1(x))) * 0.2 + x``. Trunk: ``f = conv_first(x)``,
``f = f + conv_body(body(f))``, then ``log2(s)`` times nearest x2 + conv + lrelu, ``conv_hr`` + lrelu,
``conv_last`` (old 1x ESRGAN models have no upsampling). x2 and x1 models (Real-ESRGAN)
pixel-unshuffle the input by 2 or 4 first and keep the x4 trunk, so ``in_channels`` of the first
conv is 4x or 16x the image channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import check

SCALES = (1, 2, 4, 8)


@dataclass(frozen=True)
class RRDBNetConfig:
    scale: int = 4  # output size / input size: 1, 2 (pixel-unshuffle input), 4 or 8
    channels: int = 3  # image channels in and out: 1 or 3
    num_features: int = 64  # nf: channels of the trunk
    num_blocks: int = 23  # nb: RRDBs in the trunk
    growth_channels: int = 32  # gc: channels each dense-block conv adds
    unshuffle: int = 1  # pixel-unshuffle factor of the input (1; 2 for x2, 4 for x1 Real-ESRGAN models)

    def __post_init__(self) -> None:
        check(self.scale in SCALES, f"RRDBNet scale must be one of {SCALES}, got {self.scale}")
        check(self.channels in (1, 3), f"RRDBNet channels must be 1 or 3, got {self.channels}")
        check(self.unshuffle in (1, 2, 4), f"RRDBNet unshuffle must be 1, 2 or 4, got {self.unshuffle}")
        check(self.scale * self.unshuffle in SCALES,
              f"RRDBNet scale {self.scale} with unshuffle {self.unshuffle} needs a trunk of x1, x2, x4 or x8")
        for name in ("num_features", "num_blocks", "growth_channels"):
            check(getattr(self, name) >= 1, f"RRDBNet {name} must be at least 1, got {getattr(self, name)}")

    @property
    def trunk_scale(self) -> int:
        """Upsampling done by the trunk (scale x unshuffle): 2 ** (number of conv_upK)."""
        return self.scale * self.unshuffle


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and all earlier outputs (ESRGAN Fig. 4)."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(nf + (k - 1) * gc, gc, 3, 1, 1))
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k in range(1, 5):
            conv = getattr(self, f"conv{k}")
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x  # residual scaling beta = 0.2


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and an outer scaled residual."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(nf, gc) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> (B, C, H*scale, W*scale)."""

    def __init__(self, config: RRDBNetConfig) -> None:
        super().__init__()
        self.config = config
        nf, c = config.num_features, config.channels
        self.conv_first = nn.Conv2d(c * config.unshuffle**2, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, config.growth_channels) for _ in range(config.num_blocks)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.num_upsamples = int(math.log2(config.trunk_scale))
        for k in range(1, self.num_upsamples + 1):
            setattr(self, f"conv_up{k}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.config.unshuffle
        h, w = x.shape[-2:]
        if r > 1:  # Real-ESRGAN x2 / x1: reflect-pad to a multiple of r, then space-to-depth
            x = F.pad(x, (0, -w % r, 0, -h % r), mode="reflect")
            x = F.pixel_unshuffle(x, r)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for k in range(1, self.num_upsamples + 1):
            up = getattr(self, f"conv_up{k}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        s = self.config.scale
        return out[..., : h * s, : w * s]


__all__ = ["RRDBNet", "RRDBNetConfig", "SCALES"]
