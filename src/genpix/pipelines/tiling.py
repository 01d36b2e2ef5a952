"""Tiled inference for image-to-image networks: overlapping tiles, blended where they overlap.

Tile positions follow sd-webui's ``modules/images.py`` ``split_grid``: ``n = ceil((L - overlap) /
(tile - overlap))`` tiles per axis, tile k at ``int(k * (L - tile) / (n - 1))``, so the first and
last tiles touch the borders and neighbours overlap by at least ``overlap`` pixels. Each tile's
output is weighted by a ramp across the overlap (sd-webui's ``combine_grid`` ramps linearly over
the whole overlap); here the ramp is zero on the outer quarter of the overlap next to an inner tile
edge and rises linearly over the middle half, so the pixels a tile sees least context for (the
zero-padded border) count for nothing. The weights are normalised per pixel. The result equals the
untiled network's output (up to float rounding) when the network's receptive radius, in output
pixels, is at most a quarter of ``overlap * scale``; for deeper networks it is a close blend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from genpix.config import check


@dataclass(frozen=True)
class TileConfig:
    tile: int = 192  # tile side in input pixels; 0 = no tiling (sd-webui's ESRGAN_tile, default 192)
    overlap: int = 8  # overlap between neighbouring tiles in input pixels (sd-webui's ESRGAN_tile_overlap)

    def __post_init__(self) -> None:
        check(self.tile == 0 or self.tile >= 16, f"tile size must be 0 (off) or at least 16, got {self.tile}")
        check(self.overlap >= 0, f"tile overlap must be >= 0, got {self.overlap}")
        check(self.tile == 0 or self.overlap < self.tile,
              f"tile overlap {self.overlap} must be smaller than the tile size {self.tile}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis (sd-webui ``split_grid``)."""
    if tile >= length:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    if n <= 1:
        return [0]
    return [int(k * (length - tile) / (n - 1)) for k in range(n)]


def _ramp(size: int, start_inner: bool, end_inner: bool, overlap: int) -> torch.Tensor:
    """Weights along one axis of a tile's output: 1 inside, falling to 0 towards inner edges."""
    weight = torch.ones(size)
    if overlap <= 0:
        return weight
    d = torch.arange(size, dtype=torch.float32) + 0.5
    ramp = ((d - overlap / 4) / (overlap / 2)).clamp(0, 1)  # 0 on the outer quarter, linear over the middle half
    if start_inner:
        weight = torch.minimum(weight, ramp)
    if end_inner:
        weight = torch.minimum(weight, ramp.flip(0))
    return weight


@torch.no_grad()
def tiled_apply(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int,
                config: TileConfig) -> torch.Tensor:
    """``net(x)`` for (B, C, H, W) ``x`` computed tile by tile; ``net`` maps a tile of h x w to
    ``h * scale`` x ``w * scale``. Memory: the network's activations for one tile plus the output."""
    b, _, h, w = x.shape
    if config.tile == 0 or (h <= config.tile and w <= config.tile):
        return net(x)
    ys, xs = tile_starts(h, config.tile, config.overlap), tile_starts(w, config.tile, config.overlap)
    out = weights = None
    ov = config.overlap * scale
    for y0 in ys:
        th = min(config.tile, h - y0)
        wy = _ramp(th * scale, y0 > 0, y0 + th < h, ov)
        for x0 in xs:
            tw = min(config.tile, w - x0)
            piece = net(x[..., y0 : y0 + th, x0 : x0 + tw])
            if out is None:
                out = piece.new_zeros(b, piece.shape[1], h * scale, w * scale)
                weights = piece.new_zeros(1, 1, h * scale, w * scale)
            wx = _ramp(tw * scale, x0 > 0, x0 + tw < w, ov)
            mask = (wy[:, None] * wx[None, :]).to(piece)
            region = (..., slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale))
            out[region] += piece * mask
            weights[region] += mask
    return out / weights.clamp_min(1e-8)


__all__ = ["TileConfig", "tile_starts", "tiled_apply"]
