"""The 2-D latent manifold picture of the seed (listing 17.6, figure 17.5), with axis ticks.

For a 2-D latent the grid walks z[0] and z[1]; for more dimensions it walks two chosen
dimensions (others at 0), the two principal directions of the encoded data (a model with an
encoder), or two random orthonormal directions (any model, e.g. a GAN's generator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from genpix.io.images import make_grid, to_pil


@dataclass(frozen=True)
class LatentPlane:
    """z(a, b) = center + a * directions[0] + b * directions[1]."""

    center: torch.Tensor  # (latent_dim,)
    directions: torch.Tensor  # (2, latent_dim)
    labels: tuple[str, str]  # axis names

    @staticmethod
    def axes(latent_dim: int, dims: tuple[int, int] = (0, 1)) -> "LatentPlane":
        eye = torch.eye(latent_dim)
        return LatentPlane(torch.zeros(latent_dim), eye[list(dims)], (f"z[{dims[0]}]", f"z[{dims[1]}]"))

    @staticmethod
    def random(latent_dim: int, seed: int = 0) -> "LatentPlane":
        """Two random orthonormal directions through 0 (QR of a seeded Gaussian (latent_dim, 2))."""
        gaussian = torch.randn(latent_dim, 2, generator=torch.Generator().manual_seed(seed))
        q, _ = torch.linalg.qr(gaussian)
        return LatentPlane(torch.zeros(latent_dim), q.T.contiguous(), ("u1", "u2"))

    @staticmethod
    def principal(codes: torch.Tensor) -> "LatentPlane":
        """The two principal directions of ``codes`` (N, latent_dim), scaled to one std each."""
        center = codes.mean(0)
        _, s, v = torch.linalg.svd(codes - center, full_matrices=False)
        std = s[:2] / max(1, len(codes) - 1) ** 0.5
        return LatentPlane(center, v[:2] * std[:, None], ("PC1 (std)", "PC2 (std)"))


def grid_latents(plane: LatentPlane, n: int, extent: float) -> tuple[torch.Tensor, np.ndarray]:
    """Latents (n*n, latent_dim), row-major with the second axis decreasing downwards."""
    ticks = np.linspace(-extent, extent, n)
    a = torch.tensor(ticks, dtype=torch.float32)
    b = torch.tensor(ticks[::-1].copy(), dtype=torch.float32)
    bb, aa = torch.meshgrid(b, a, indexing="ij")
    z = plane.center + aa.reshape(-1, 1) * plane.directions[0] + bb.reshape(-1, 1) * plane.directions[1]
    return z, ticks


def draw_axes(grid: Image.Image, ticks: np.ndarray, cell: int, labels: tuple[str, str]) -> Image.Image:
    """Frame a grid image with tick labels below (first axis) and left (second axis)."""
    font = ImageFont.load_default()
    margin_left, margin_bottom = 44, 34
    out = Image.new("RGB", (grid.width + margin_left + 8, grid.height + margin_bottom + 8), "white")
    out.paste(grid.convert("RGB"), (margin_left, 8))
    draw = ImageDraw.Draw(out)
    step = max(1, int(np.ceil(26 / cell)))  # skip labels that would overlap
    for i, value in enumerate(ticks):
        centre = i * cell + cell // 2
        x, y = margin_left + centre, 8 + grid.height
        draw.line([(x, y), (x, y + 3)], fill="black")
        yl = 8 + centre
        draw.line([(margin_left - 3, yl), (margin_left, yl)], fill="black")
        if i % step == 0:
            draw.text((x, y + 4), f"{value:.1f}", fill="black", font=font, anchor="ma")
            draw.text((margin_left - 5, 8 + (len(ticks) - 1 - i) * cell + cell // 2),
                      f"{value:.1f}", fill="black", font=font, anchor="rm")
    draw.text((margin_left + grid.width // 2, out.height - 2), labels[0], fill="black", font=font, anchor="md")
    draw.text((2, 2), labels[1], fill="black", font=font, anchor="la")
    return out


@torch.no_grad()
def latent_grid(decode: Callable[[torch.Tensor], torch.Tensor], plane: LatentPlane, *,
                n: int = 30, extent: float = 1.0) -> Image.Image:
    """Decode an n x n grid over [-extent, extent]^2 of ``plane`` into one figure with ticks."""
    z, ticks = grid_latents(plane, n, extent)
    images = to_pil(decode(z))
    return draw_axes(make_grid(images, columns=n, padding=0), ticks, images[0].width, plane.labels)
