"""Token merging for Stable Diffusion (Bolya and Hoffman 2023, "Token Merging for Fast Stable
Diffusion"; ToMe, Bolya et al. 2023, "Token Merging: Your ViT But Faster").

Before the self-attention of a transformer block at high resolution, a fraction ``ratio`` of the
H*W tokens is merged into similar ones and unmerged after (sec. 3-4): the tokens are split into
destinations, one per 2x2 window (sec. 4.2's 2d stride sx = sy = 2; here always the window's
first position, so the picture depends on the seed alone) and sources (the rest); each source is
matched to its most similar destination by cosine similarity of the block's input (bipartite soft
matching, ToMe sec. 3); the r = int(ratio * N) best-matched sources are averaged into their
destinations (merge), attention runs on the N - r tokens left, and each merged source takes its
destination's output (unmerge, sec. 3). Only the self-attention is merged (the paper's default;
cross-attention and the feed-forward see every token), and only in blocks whose token count is the
latent's divided by at most ``max_downsample`` per side (sd-webui's tomesd defaults).

It is switched on per call, never on the shared modules: :func:`merging` sets a context variable
that BasicTransformerBlock (models/sd_unet.py) reads through :func:`merged`; other threads and
other requests see it off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from genpix.config import check

Merge = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TokenMergingConfig:
    ratio: float = 0.5  # fraction of the tokens merged away (sd-webui's token_merging_ratio)
    max_downsample: int = 1  # merge in blocks at most this many times coarser than the latent (per side)
    sx: int = 2  # destination stride (one destination per sx x sy window)
    sy: int = 2

    def __post_init__(self) -> None:
        check(0 <= self.ratio < 1, f"token merging ratio must be in [0, 1), got {self.ratio}")
        check(self.max_downsample >= 1 and self.sx >= 1 and self.sy >= 1,
              "token merging max_downsample, sx and sy must be at least 1")


_ACTIVE: ContextVar[tuple[TokenMergingConfig, tuple[int, int]] | None] = ContextVar("token_merging", default=None)


@contextmanager
def merging(config: TokenMergingConfig, latent_size: tuple[int, int]) -> Iterator[None]:
    """Token merging on for the U-Net calls made inside (this thread / task only); ``latent_size``
    (h, w) of the U-Net input."""
    token = _ACTIVE.set((config, latent_size))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def merged(attention: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``attention`` as is when merging is off (or not at this resolution), else unmerge . attention .
    merge, the merge planned on the block input ``x`` (B, N, C)."""
    active = _ACTIVE.get()
    if active is None or active[0].ratio == 0:
        return attention
    config, (height, width) = active
    downsample = math.ceil(math.sqrt(height * width // x.shape[1]))
    if downsample > config.max_downsample:
        return attention
    h, w = math.ceil(height / downsample), math.ceil(width / downsample)
    merge, unmerge = bipartite_soft_matching_2d(x, w, h, config.sx, config.sy, int(x.shape[1] * config.ratio))
    return lambda y: unmerge(attention(merge(y)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _destinations(h: int, w: int, sx: int, sy: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Token indices (1, N, 1) ordered destinations first (the first position of each sy x sx
    window), then sources; and the number of destinations."""
    hsy, wsx = h // sy, w // sx
    window = torch.zeros(hsy, wsx, sy * sx, dtype=torch.int64, device=device)
    window[..., 0] = -1  # -1: destination, 0: source
    grid = torch.zeros(h, w, dtype=torch.int64, device=device)  # a remainder row / column: sources
    grid[:hsy * sy, :wsx * sx] = window.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
    return grid.reshape(1, -1, 1).argsort(dim=1, stable=True), hsy * wsx


def bipartite_soft_matching_2d(metric: torch.Tensor, w: int, h: int, sx: int, sy: int,
                               r: int) -> tuple[Merge, Merge]:
    """(merge, unmerge) for tokens (B, N, C) on an h x w grid: merge (B, N, C') -> (B, N - r, C')
    averages the r sources most similar to a destination into it (ToMe sec. 3, "mean" reduction);
    unmerge (B, N - r, C') -> (B, N, C') gives each merged source its destination's value."""
    b, n, _ = metric.shape
    if r <= 0:
        return _identity, _identity
    with torch.no_grad():
        order, num_dst = _destinations(h, w, sx, sy, metric.device)
        a_idx, b_idx = order[:, num_dst:], order[:, :num_dst]  # sources, destinations

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            c = x.shape[-1]
            return (torch.gather(x, 1, a_idx.expand(b, n - num_dst, c)),
                    torch.gather(x, 1, b_idx.expand(b, num_dst, c)))

        unit = metric / metric.norm(dim=-1, keepdim=True)
        src, dst = split(unit)
        scores = src @ dst.transpose(-1, -2)  # cosine similarity, (B, sources, destinations)
        r = min(src.shape[1], r)
        node_max, node_idx = scores.max(dim=-1)  # each source's best destination
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]  # kept sources, merged sources
        dst_idx = torch.gather(node_idx[..., None], 1, src_idx)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = split(x)
        c = x.shape[-1]
        unm = torch.gather(src, 1, unm_idx.expand(b, -1, c))
        merged_src = torch.gather(src, 1, src_idx.expand(b, r, c))
        dst = dst.scatter_reduce(1, dst_idx.expand(b, r, c), merged_src, reduce="mean")
        return torch.cat([unm, dst], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        kept = unm_idx.shape[1]
        unm, dst = x[:, :kept], x[:, kept:]
        c = x.shape[-1]
        out = torch.zeros(b, n, c, device=x.device, dtype=x.dtype)
        out.scatter_(1, b_idx.expand(b, num_dst, c), dst)
        sources = a_idx.expand(b, -1, 1)
        out.scatter_(1, torch.gather(sources, 1, unm_idx).expand(b, kept, c), unm)
        out.scatter_(1, torch.gather(sources, 1, src_idx).expand(b, r, c),
                     torch.gather(dst, 1, dst_idx.expand(b, r, c)))
        return out

    return merge, unmerge
