"""The PatchGAN discriminator (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks", sec. 3.2.2), as latent diffusion's autoencoders use it (Esser et al. 2021's
``NLayerDiscriminator``): strided 4x4 convolutions, batch norm and leaky ReLU, ending in one logit
per overlapping image patch rather than one per image."""

from __future__ import annotations

import torch
from torch import nn


def patch_grid(image_size: int, layers: int) -> int:
    """Side of the logit map for ``image_size`` images: ``layers`` halvings, then two 4x4 stride-1 convolutions."""
    return image_size // 2**layers - 2


class PatchDiscriminator(nn.Module):
    """x (B, C, H, W) in [-1, 1] -> logits (B, 1, H / 2^layers - 2, W / 2^layers - 2)."""

    def __init__(self, channels: int, width: int = 32, layers: int = 2) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        out = width
        for n in range(1, layers + 1):
            stride = 2 if n < layers else 1  # the last widening keeps the size
            inp, out = out, width * min(2**n, 8)
            blocks += [nn.Conv2d(inp, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
        blocks.append(nn.Conv2d(out, 1, 4, 1, 1))
        self.main = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)

