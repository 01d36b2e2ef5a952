"""The denoising U-Net of Ho et al. (2020, appendix B), after the PixelCNN++ backbone.

Levels of ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3x3 convolutions, the time
embedding added in between), optional self-attention at chosen levels, a strided convolution down
between levels and nearest upsampling plus a convolution back up, skip connections from every
down block to its up block, and a middle of residual, attention, residual. The time t is embedded
sinusoidally (Vaswani et al. 2017, sec. 3.5) and passed through an MLP; an optional class
embedding (with one extra "null" class for classifier-free guidance, Ho and Salimans 2022) is
added to it. The last convolution starts at zero, so an untrained network predicts 0 (seed 000).

Blocks take ``(h, emb)``; a cross-attention block for text conditioning can join them later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import check

Preset = Literal["tiny", "small", "base"]


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 28  # H = W, divisible by 2 ** (len(channel_mult) - 1)
    channels: int = 1  # image channels in and out
    base_channels: int = 32  # channels of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # channels per level = base_channels * mult
    num_res_blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with self-attention
    mid_attention: bool = True  # self-attention between the middle residual blocks
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.0  # inside residual blocks (Ho et al. use 0.1 on CIFAR-10)
    norm_groups: int = 8  # GroupNorm groups; divides every channel count
    num_classes: int = 0  # > 0 adds a class embedding with num_classes + 1 rows (last = null)

    def __post_init__(self) -> None:
        check(self.channels >= 1, f"channels must be at least 1, got {self.channels}")
        check(len(self.channel_mult) >= 1 and all(m >= 1 for m in self.channel_mult),
              f"channel_mult must be positive integers, got {self.channel_mult}")
        check(self.base_channels >= 1, f"base_channels must be at least 1, got {self.base_channels}")
        check(self.num_res_blocks >= 1, f"num_res_blocks must be at least 1, got {self.num_res_blocks}")
        levels = len(self.channel_mult)
        check(all(0 <= lv < levels for lv in self.attention_levels),
              f"attention_levels {self.attention_levels} must lie in 0..{levels - 1}")
        factor = 2 ** (levels - 1)
        check(self.image_size >= factor and self.image_size % factor == 0,
              f"image_size {self.image_size} must be a multiple of {factor} "
              f"(2 ** (number of levels - 1)); use fewer channel_mult entries or resize")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.head_channels >= 1, f"head_channels must be at least 1, got {self.head_channels}")
        widths = {self.base_channels * m for m in self.channel_mult}
        check(self.norm_groups >= 1 and all(w % self.norm_groups == 0 for w in widths),
              f"norm_groups {self.norm_groups} must divide every level's channels {sorted(widths)}")
        check(self.num_classes >= 0, f"num_classes must be >= 0, got {self.num_classes}")

    @property
    def null_class(self) -> int:
        """The label meaning "no class" (classifier-free guidance's unconditional branch)."""
        return self.num_classes


# name -> (base_channels, channel_mult, num_res_blocks, attention_levels, norm_groups)
PRESETS: dict[str, dict] = {
    "tiny": dict(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,),
                 norm_groups=8),
    "small": dict(base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(2,),
                  norm_groups=16),
    "base": dict(base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(2,),
                 norm_groups=32),  # Ho et al.'s CIFAR-10 model (35.7M parameters)
}


def preset_config(name: str, **overrides) -> UNetConfig:
    check(name in PRESETS, f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(UNetConfig(**{**PRESETS[name], "image_size": 32}), **overrides)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) float times -> (B, dim): [cos(t w_i), sin(t w_i)], w_i = max_period^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """h + conv(drop(silu(norm(conv(silu(norm(h))) + W emb)))), a 1x1 skip when channels change."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual (Ho et al. 2020, appendix B)."""

    def __init__(self, channels: int, groups: int, head_channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, c / heads)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Sequential):
    """Blocks applied in order, each given the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, emb)
        return x


class UNet(nn.Module):
    """eps / v / x0 predictor: x_t (B, C, H, W), t (B,) float, class_labels (B,) int -> (B, C, H, W)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        base, emb_dim = cfg.base_channels, 4 * cfg.base_channels
        g, drop, hc = cfg.norm_groups, cfg.dropout, cfg.head_channels
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(cfg.channels, base, 3, padding=1)

        widths = [base * m for m in cfg.channel_mult]
        self.down = nn.ModuleList()
        skips, c = [base], base
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks = [ResBlock(c, width, emb_dim, g, drop)]
                if level in cfg.attention_levels:
                    blocks.append(SelfAttention(width, g, hc))
                self.down.append(Stage(*blocks))
                c = width
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(Stage(Downsample(c)))
                skips.append(c)
        mid = [ResBlock(c, c, emb_dim, g, drop)] + ([SelfAttention(c, g, hc)] if cfg.mid_attention else [])
        self.mid = Stage(*mid, ResBlock(c, c, emb_dim, g, drop))
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for i in range(cfg.num_res_blocks + 1):
                blocks = [ResBlock(c + skips.pop(), width, emb_dim, g, drop)]
                if level in cfg.attention_levels:
                    blocks.append(SelfAttention(width, g, hc))
                if level > 0 and i == cfg.num_res_blocks:
                    blocks.append(Upsample(width))
                self.up.append(Stage(*blocks))
                c = width
        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = nn.Conv2d(c, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(x, t, class_labels)
        h, hs = self.encode(x, emb)
        return self.decode(self.mid(h, emb), hs, emb)

    def embed(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The time (and class) embedding (B, 4 base_channels)."""
        emb = self.time_mlp(timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.config.base_channels))
        if self.class_embedding is not None:
            if class_labels is None:  # no label: the null class
                class_labels = torch.full((x.shape[0],), self.config.null_class, device=x.device)
            emb = emb + self.class_embedding(class_labels)
        elif class_labels is not None:
            raise ValueError("this U-Net has no class embedding (num_classes = 0)")
        return emb.to(x.dtype) if not torch.is_autocast_enabled() else emb

    def encode(self, x: torch.Tensor, emb: torch.Tensor, stages: int | None = None) -> tuple[torch.Tensor, list]:
        """conv_in and the down stages (only the first ``stages``: DeepCache's shallow path): (h, skips)."""
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down[:stages]:
            h = stage(h, emb)
            hs.append(h)
        return h, hs

    def decode(self, h: torch.Tensor, hs: list[torch.Tensor], emb: torch.Tensor, start: int = 0,
               stop: int | None = None) -> torch.Tensor:
        """up[start:stop] on h, popping the skips ``hs``; the output layers after the last up stage."""
        for stage in self.up[start:stop]:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return h if stop is not None else self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(config: UNetConfig) -> int:
    """Parameters of a U-Net with ``config``, without allocating its weights."""
    with torch.device("meta"):
        return sum(p.numel() for p in UNet(config).parameters())
