"""DeepCache (Ma, Fang and Wang 2023, "DeepCache: Accelerating Diffusion Models for Free").

Adjacent denoising steps have nearly the same high-level features (sec. 3.2): the deep part of a
U-Net changes slowly while its shallow skip branches carry the detail. DeepCache runs the whole
U-Net on a full step and keeps the main branch's feature where it re-enters the shallow levels
(the input of up block ``D - m``, eq. 4's cached U_{m+1}(.) output); on the next ``N - 1`` calls
only the shallow branch runs (eq. 5): the input convolution, the first ``m`` levels down (the last
without its downsampler) and their up blocks, with the cached deep feature in place of all
below. This is the paper's uniform 1:N strategy (sec. 3.3) at the granularity of whole levels
(``branch`` = m; m = 1 keeps the finest level only, the paper's shallowest skip branch).

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
    branch: int = 1  # m: the levels of the shallow branch run on cached calls (1: the finest only)

    def __post_init__(self) -> None:
        check(self.interval >= 1, f"DeepCache interval must be at least 1, got {self.interval}")
        check(self.branch >= 1, f"DeepCache branch must be at least 1, got {self.branch}")


class DeepCache:
    """``unet`` with DeepCache: called as the U-Net itself, (x, t, *cond, **cond) -> output.
    ``full_calls`` and ``cached_calls`` count what ran."""

    def __init__(self, unet: nn.Module, config: DeepCacheConfig = DeepCacheConfig()) -> None:
        if not isinstance(unet, (SDUNet, UNet)):
            raise TypeError(f"DeepCache runs genpix's U-Nets (SDUNet, UNet), not {type(unet).__name__}")
        levels = len(unet.down_blocks) if isinstance(unet, SDUNet) else len(unet.config.channel_mult)
        check(config.branch < levels, f"DeepCache branch {config.branch} must be below the U-Net's {levels} levels")
        self.unet, self.config = unet, config
        self.full_calls = self.cached_calls = 0
        self._deep: torch.Tensor | None = None  # the cached main-branch feature
        self._since = 0  # calls since the last full one

    def _cut(self) -> tuple[int, int]:
        """(down pieces on the shallow path, the first up piece of the shallow branch)."""
        unet, m = self.unet, self.config.branch
        if isinstance(unet, SDUNet):  # one down block per level
            return m, len(unet.up_blocks) - m
        per_level = unet.config.num_res_blocks + 1  # res stages and a downsampler (up: res stages)
        return m * per_level - 1, len(unet.up) - m * per_level

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
        kept, cut = self._cut()
        if self._refresh(x):  # eq. 4: the whole U-Net, the deep feature kept
            h, skips = unet.encode(x, emb, *extra)
            self._deep = unet.decode(middle(h, emb, *extra), skips, emb, *extra, stop=cut)
            self.full_calls += 1
        else:  # eq. 5: the shallow branch on the cached feature
            _, skips = unet.encode(x, emb, *extra, kept)
            self.cached_calls += 1
        return unet.decode(self._deep, skips, emb, *extra, start=cut)
