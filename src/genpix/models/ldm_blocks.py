"""Building blocks shared by the latent-diffusion autoencoder and U-Net (Rombach et al. 2022).

Both networks of "High-Resolution Image Synthesis with Latent Diffusion Models" are made of the
same parts: pre-activation residual blocks (GroupNorm, SiLU, 3x3 convolutions, an optional time
embedding added in between), strided-convolution downsampling, nearest-neighbour upsampling plus a
convolution, and multi-head attention. The module and parameter names are those of diffusers
(``resnets.0.norm1``, ``downsamplers.0.conv``, ``to_q``, ``to_out.0``), so a diffusers
``state_dict`` loads into these modules without renaming. Attention runs through
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import ConfigError

AttentionFactory = Callable[[int], nn.Module]  # channels -> module called as attn(h, context)


class ResnetBlock2D(nn.Module):
    """x + conv2(drop(silu(norm2(conv1(silu(norm1(x))) + W silu(temb))))), a 1x1 shortcut when
    the channel count changes. ``temb_channels=None`` drops the time embedding (the autoencoder)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int | None, groups: int,
                 eps: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels is not None else None
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return shortcut + h


class Downsample2D(nn.Module):
    """3x3 convolution with stride 2. ``padding=0`` pads right and bottom by one pixel first, as the
    LDM autoencoder does; the U-Net pads symmetrically (``padding=1``)."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling (by 2, or to ``size``) followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)


class Attention(nn.Module):
    """Multi-head attention softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017) over tokens
    (B, N, C), or over the H*W positions of a map (B, C, H, W) when given one.

    ``context`` (B, L, context_dim) makes it cross-attention (keys and values from the context).
    ``norm_groups`` adds a GroupNorm before the projections (maps only) and ``residual`` adds the
    input back: the autoencoder's mid-block self-attention. ``upcast`` computes the attention in float32 for
    half-precision inputs (SD 2.1's ``upcast_attention``).
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None,
                 bias: bool = False, norm_groups: int | None = None, eps: float = 1e-6,
                 residual: bool = False, upcast: bool = False) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.residual, self.upcast = heads, residual, upcast
        self.group_norm = nn.GroupNorm(norm_groups, query_dim, eps=eps) if norm_groups else None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        residual, spatial = x, x.ndim == 4
        if spatial:
            b, c, height, width = x.shape
            x = x.reshape(b, c, height * width)  # (B, C, HW)
            x = (self.group_norm(x) if self.group_norm is not None else x).transpose(1, 2)  # (B, HW, C)
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)  # (B, N or L, heads * d)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, d)
        dtype = q.dtype
        if self.upcast and dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v).to(dtype)  # (B, heads, N, d)
        out = self.to_out[1](self.to_out[0](out.transpose(1, 2).flatten(2)))  # (B, N, C)
        if spatial:
            out = out.transpose(1, 2).reshape(b, c, height, width)
        return out + residual if self.residual else out


class UNetMidBlock2D(nn.Module):
    """resnet, then (attention, resnet) ``num_layers`` times, at the lowest resolution.

    ``attention(channels)`` builds the attention: the autoencoder's spatial self-attention or the
    U-Net's cross-attention transformer; either is called as ``attn(h, context)``."""

    def __init__(self, channels: int, temb_channels: int | None, groups: int, eps: float,
                 attention: AttentionFactory, dropout: float = 0.0, num_layers: int = 1) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(channels, channels, temb_channels, groups, eps, dropout) for _ in range(num_layers + 1))
        self.attentions = nn.ModuleList(attention(channels) for _ in range(num_layers))

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.resnets[0](h, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            h = resnet(attn(h, context), temb)
        return h


class DownBlock2D(nn.Module):
    """``num_layers`` resnets (each followed by an attention when ``attention`` is given), then an
    optional downsampler. Returns the output and every intermediate state, the U-Net's skips.

    diffusers' DownBlock2D (no attention), CrossAttnDownBlock2D (attention = a Transformer2DModel)
    and the autoencoder's DownEncoderBlock2D (no time embedding, ``downsample_padding=0``)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int | None, num_layers: int,
                 groups: int, eps: float, add_downsample: bool, downsample_padding: int = 1,
                 attention: AttentionFactory | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps, dropout)
            for i in range(num_layers))
        self.attentions = nn.ModuleList(attention(out_channels) for _ in range(num_layers)) if attention else None
        self.downsamplers = (nn.ModuleList([Downsample2D(out_channels, downsample_padding)])
                             if add_downsample else None)

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None, context: torch.Tensor | None = None,
                layers: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``layers``: only the first ``layers`` of its layers (each resnet with its attention, then the
        downsampler), one state each (DeepCache's shallow path)."""
        states = []
        for i, resnet in enumerate(self.resnets[:layers]):
            h = resnet(h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h, context)
            states.append(h)
        if self.downsamplers is not None and (layers is None or layers > len(self.resnets)):
            h = self.downsamplers[0](h)
            states.append(h)
        return h, states


class UpBlock2D(nn.Module):
    """Resnets (each followed by an attention when ``attention`` is given), then an optional
    upsampler. ``resnet_in_channels[i]`` is the input width of resnet i; in the U-Net it includes
    the skip concatenated before it.

    diffusers' UpBlock2D, CrossAttnUpBlock2D and the autoencoder's UpDecoderBlock2D (no skips,
    no time embedding)."""

    def __init__(self, resnet_in_channels: Sequence[int], out_channels: int, temb_channels: int | None,
                 groups: int, eps: float, add_upsample: bool, attention: AttentionFactory | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(c_in, out_channels, temb_channels, groups, eps, dropout) for c_in in resnet_in_channels)
        self.attentions = (nn.ModuleList(attention(out_channels) for _ in resnet_in_channels)
                           if attention else None)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor] | None = None, temb: torch.Tensor | None = None,
                context: torch.Tensor | None = None, upsample_size: Sequence[int] | None = None,
                start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``skips`` is popped from the end, one per resnet (the U-Net); None for the decoder.
        ``start`` / ``stop``: only resnets[start:stop] with their attentions, the upsampler only
        after the last resnet (DeepCache's cut inside a level)."""
        stop = len(self.resnets) if stop is None else stop
        for i in range(start, stop):
            if skips is not None:
                h = torch.cat([h, skips.pop()], dim=1)
            h = self.resnets[i](h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h, context)
        if self.upsamplers is not None and stop == len(self.resnets):
            h = self.upsamplers[0](h, upsample_size)
        return h


def map_diffusers_config(config: dict[str, Any], cls: type, fixed: dict[str, Any], name: str) -> dict[str, Any]:
    """The fields of dataclass ``cls`` found in a diffusers config.json (lists become tuples).

    Keys starting with '_' are metadata. ``fixed`` maps the diffusers options this layout does not
    vary to the value it implements (or a test of the value): any other value is a ConfigError, and
    so is a key that is neither a field nor in ``fixed``; nothing unknown is silently dropped."""
    ours = {f.name for f in fields(cls)}
    mapped = {}
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key in ours:
            mapped[key] = tuple(value) if isinstance(value, list) else value
        elif key in fixed:
            accepted = fixed[key]
            if not (accepted(value) if callable(accepted) else value == accepted):
                shown = "" if callable(accepted) else f" (only {accepted!r})"
                raise ConfigError(f"{name}: {key}={value!r} is not supported{shown}")
        else:
            raise ConfigError(f"{name}: unknown config key {key!r}; known keys: {', '.join(sorted(ours | set(fixed)))}")
    size = mapped.pop("sample_size", None)  # diffusers allows None (unknown) and (H, W)
    if size is not None:
        mapped["sample_size"] = size[0] if isinstance(size, tuple) else size
    return mapped
