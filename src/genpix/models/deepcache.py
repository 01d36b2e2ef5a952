"""DeepCache (Ma, Fang and Wang 2023, "DeepCache: Accelerating Diffusion Models for Free").

Adjacent denoising steps have nearly the same high-level features (sec. 3.2): the deep part of a
U-Net changes slowly while its shallow skip branches carry the detail. DeepCache runs the whole
U-Net on a full step and keeps the main branch's feature where skip branch m re-enters it (eq. 4:
the output of U_{m+1}, the input of U_m); on the next ``N - 1`` calls only the skip branch runs
(eq. 5): D_1 .. D_m and U_m .. U_1 on the fresh input, U_m on [cached feature, D_m's output], all
below taken from the cache. This is the paper's uniform 1:N strategy (sec. 3.3).

Here a layer is a resnet with its transformer, or a level's down- or upsampler. The skip branch
leaves level ``branch`` (counted from the finest, 1) after its down layer ``block`` (counted from 1;
the official code's ``cache_layer_id`` and ``cache_block_id`` count both from 0): a cached call runs
conv_in, the down layers up to that one, and the up layers that pop their skips (one more than the
down layers: conv_in's), then the output layers. ``branch`` 1, ``block`` 1 is the paper's shallowest
branch (the official example's 0, 0; 0.22 of a full call's FLOPs for SD 1.5 at 512x512);
``block`` None leaves after the level's last resnet: the whole level but its downsampler (0.38).

:class:`DeepCache` wraps one U-Net (models/sd_unet.py's cross-attention U-Net, of SD 1.x/2.x/XL and
genpix's latent models, or models/unet.py's pixel U-Net) through its own ``embed`` / ``encode`` /
``decode`` pieces, and is called exactly as the U-Net. The cache lives in the wrapper: make one per
sampling call (never share it across requests), so concurrent requests never see each other's
features. The interval counts network calls (a second-order sampler calls twice per step), and a
call whose batch differs from the cached one (guidance switched off for the last steps) runs full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genpix.config import check
from genpix.models.sd_unet import SDUNet
from genpix.models.unet import UNet


@dataclass(frozen=True)
class DeepCacheConfig:
    interval: int = 3  # N: a full U-Net pass every N calls (1: every call full, the exact path)
    branch: int = 1  # m: the level the skip branch leaves (1: the finest)
    block: int | None = None  # the down layer of that level it leaves after, from 1; None: the level's last

    def __post_init__(self) -> None:
        check(self.interval >= 1, f"DeepCache interval must be at least 1, got {self.interval}")
        check(self.branch >= 1, f"DeepCache branch must be at least 1, got {self.branch}")
        check(self.block is None or self.block >= 1, f"DeepCache block must be at least 1, got {self.block}")


def unet_layers(unet: nn.Module) -> tuple[int, int]:
    """(levels, resnets per level on the way down) of one of genpix's U-Nets."""
    if isinstance(unet, SDUNet):
        return len(unet.down_blocks), unet.config.layers_per_block
    if isinstance(unet, UNet):
        return len(unet.config.channel_mult), unet.config.num_res_blocks
    raise TypeError(f"DeepCache runs genpix's U-Nets (SDUNet, UNet), not {type(unet).__name__}")


class DeepCache:
    """``unet`` with DeepCache: called as the U-Net itself, (x, t, *cond, **cond) -> output.
    ``full_calls`` and ``cached_calls`` count what ran."""

    def __init__(self, unet: nn.Module, config: DeepCacheConfig = DeepCacheConfig()) -> None:
        levels, per_level = unet_layers(unet)
        check(config.branch < levels, f"DeepCache branch {config.branch} must be below the U-Net's {levels} levels")
        block = per_level if config.block is None else config.block
        check(block <= per_level, f"DeepCache block {block} must be at most the U-Net's {per_level} layers per level")
        self.unet, self.config = unet, config
        # (down layers on the shallow path, the first up layer of the skip branch); each level has
        # its resnets and a downsampler on the way down, one more layer on the way up
        self.kept = (config.branch - 1) * (per_level + 1) + block
        self.cut = levels * (per_level + 1) - self.kept - 1
        self.full_calls = self.cached_calls = 0
        self._deep: torch.Tensor | None = None  # the cached main-branch feature
        self._since = 0  # calls since the last full one

    def _refresh(self, x: torch.Tensor) -> bool:
        stale = self._deep is None or self._deep.shape[0] != x.shape[0] or self._since >= self.config.interval
        self._since = 1 if stale else self._since + 1
        return stale

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        unet = self.unet
        emb = unet.embed(x, t, *args, **kwargs)
        if isinstance(unet, SDUNet):  # every block of the cross-attention U-Net takes the context
            extra, middle = (args[0] if args else kwargs["context"],), unet.mid_block
        else:
            extra, middle = (), unet.mid
        if self._refresh(x):  # eq. 4: the whole U-Net, the deep feature kept
            h, skips = unet.encode(x, emb, *extra)
            self._deep = unet.decode(middle(h, emb, *extra), skips, emb, *extra, stop=self.cut)
            self.full_calls += 1
        else:  # eq. 5: the skip branch on the cached feature
            _, skips = unet.encode(x, emb, *extra, self.kept)
            self.cached_calls += 1
        return unet.decode(self._deep, skips, emb, *extra, start=self.cut)
