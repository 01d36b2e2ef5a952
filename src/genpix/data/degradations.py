"""Low-resolution inputs made from clean pictures, for training super-resolution networks.

``bicubic``: the classic setting, a bicubic (antialiased) downscale by the scale factor.
``real``: a one-pass version of Real-ESRGAN's degradation model (Wang et al. 2021, section 3.1:
blur, resize, noise, JPEG): a Gaussian blur with sigma ~ U(0.2, blur_sigma_max), the bicubic
downscale, additive Gaussian noise with std ~ U(0, noise_max), then JPEG at a quality ~
U(jpeg_quality_min, 95) (0 = no JPEG). Every random number comes from the ``rand`` / ``randn``
callables, so a training step draws them from its own seeded generator.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from genpix.config import check

Draw = Callable[..., torch.Tensor]  # draw(*shape) -> (B, *shape)


@dataclass(frozen=True)
class DegradationConfig:
    kind: Literal["bicubic", "real"] = "real"
    blur_sigma_max: float = 1.2  # largest Gaussian blur sigma, in high-resolution pixels
    noise_max: float = 0.04  # largest noise std, pictures in [0, 1]
    jpeg_quality_min: int = 60  # lowest JPEG quality (0: no JPEG)

    def __post_init__(self) -> None:
        check(self.blur_sigma_max >= 0.2, f"blur_sigma_max must be at least 0.2, got {self.blur_sigma_max}")
        check(0 <= self.noise_max <= 1, f"noise_max must be in [0, 1], got {self.noise_max}")
        check(self.jpeg_quality_min == 0 or 1 <= self.jpeg_quality_min <= 95,
              f"jpeg_quality_min must be 0 (no JPEG) or 1..95, got {self.jpeg_quality_min}")


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each picture of (B, C, H, W) ``x`` with its own sigma (B,), separably, reflect-padded."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].to(x) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, k)
    flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=b * c)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)
    return flat.reshape(b, c, h, w)


def jpeg(x: torch.Tensor, quality: list[int]) -> torch.Tensor:
    """Each picture of (B, C, H, W) ``x`` in [0, 1] through PIL's JPEG at its quality."""
    out = []
    for picture, q in zip(x, quality):
        array = (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(q))
        decoded = np.asarray(Image.open(buffer)).reshape(array.shape)
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1))
    return torch.stack(out).to(x.device, x.dtype) / 255


def degrade(hr: torch.Tensor, scale: int, config: DegradationConfig, rand: Draw, randn: Draw) -> torch.Tensor:
    """(B, C, H, W) clean pictures in [0, 1] -> (B, C, H // scale, W // scale) degraded ones."""
    b, c, h, w = hr.shape
    x = hr
    if config.kind == "real":
        u = rand(3)  # blur sigma, noise std, JPEG quality: one uniform each per picture
        sigma = 0.2 + u[:, 0] * (config.blur_sigma_max - 0.2)
        radius = min(math.ceil(3 * config.blur_sigma_max), (min(h, w) - 1) // 2)
        x = gaussian_blur(x, sigma, radius)
    x = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    if config.kind == "real":
        x = x + randn(c, h // scale, w // scale) * (u[:, 1] * config.noise_max)[:, None, None, None]
        x = x.clamp(0, 1)
        if config.jpeg_quality_min:
            quality = (config.jpeg_quality_min + u[:, 2] * (95 - config.jpeg_quality_min)).round()
            x = jpeg(x, quality.int().tolist())
    return x.clamp(0, 1)


__all__ = ["DegradationConfig", "degrade", "gaussian_blur", "jpeg"]
