"""Peak signal-to-noise ratio."""

from __future__ import annotations

import torch


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per image in dB: 10 log10(data_range^2 / MSE). x, y: (B, C, H, W); returns (B,).

    Identical images give +inf.
    """
    mse = (x.float() - y.float()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)
