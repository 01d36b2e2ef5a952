"""The tiny preview decoder: TAESD's decoder architecture (madebyollin/taesd, taesd.py ``Decoder``;
diffusers' ``DecoderTiny``), a stack of plain 3x3 convolutions that turns a diffusion latent
straight into an image in [0, 1], for live previews and a fast final decode.

    Clamp (3 tanh(z / 3)) -> conv(latent, c) -> ReLU
    -> stage 1: Block x n_1, Upsample x2, conv (no bias) -> ... -> last stage: Block x n_k, conv(c, out)
    Block(x) = ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x)

It decodes the latent the sampler produces (for Stable Diffusion: the VAE latent times 0.18215),
so no scaling factor is applied before it. The module is an ``nn.Sequential`` with TAESD's own
indices, so its state dict has the published ``taesd_decoder`` keys (``1.weight``,
``3.conv.0.weight``, ...); io/tiny_decoder.py reads those and diffusers' ``decoder.layers.N``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genpix.config import check


@dataclass(frozen=True)
class TinyDecoderConfig:
    """TAESD's decoder for Stable Diffusion by default: 4 latent channels, 64 channels, blocks
    (3, 3, 3, 1) with an upsampling x2 between stages (f = 8)."""

    latent_channels: int = 4
    out_channels: int = 3
    channels: int = 64
    blocks: tuple[int, ...] = (3, 3, 3, 1)  # Blocks per stage; len(blocks) - 1 upsamplings

    def __post_init__(self) -> None:
        check(self.latent_channels >= 1 and self.out_channels >= 1 and self.channels >= 1,
              f"tiny decoder channels must be positive, got {self.latent_channels}, {self.channels}, "
              f"{self.out_channels}")
        check(len(self.blocks) >= 1 and all(n >= 1 for n in self.blocks),
              f"tiny decoder blocks must be a non-empty list of positive counts, got {self.blocks}")

    @property
    def upsampling_factor(self) -> int:
        return 2 ** (len(self.blocks) - 1)


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """3 tanh(x / 3): a soft clamp of the latent to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """TAESD's residual block: three 3x3 convolutions with ReLUs, plus the input, through a ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + x)


class TinyDecoder(nn.Sequential):
    """latent (B, latent_channels, h, w) -> image (B, out_channels, h f, w f) in about [0, 1]."""

    def __init__(self, config: TinyDecoderConfig = TinyDecoderConfig()) -> None:
        c = config.channels
        layers: list[nn.Module] = [Clamp(), _conv(config.latent_channels, c), nn.ReLU()]
        for stage, count in enumerate(config.blocks):
            layers += [Block(c) for _ in range(count)]
            if stage < len(config.blocks) - 1:
                layers += [nn.Upsample(scale_factor=2), _conv(c, c, bias=False)]
        layers.append(_conv(c, config.out_channels))
        super().__init__(*layers)
        self.config = config


def config_from_state_dict(state: dict[str, torch.Tensor]) -> TinyDecoderConfig:
    """The config a state dict in TAESD's layout was saved from: channels from the first and last
    convolutions, the stages from where the bias-free convolutions (after each upsampling) sit."""
    convs = sorted(int(k.split(".")[0]) for k in state if k.split(".")[0].isdigit() and k.count(".") == 1
                   and k.endswith("weight") and state[k].ndim == 4)
    check(len(convs) >= 2, "not a tiny decoder state dict: fewer than two plain convolutions")
    first, last = state[f"{convs[0]}.weight"], state[f"{convs[-1]}.weight"]
    blocks, count = [], 0
    for index in range(convs[0] + 1, convs[-1]):
        if f"{index}.conv.0.weight" in state:
            count += 1
        elif f"{index}.weight" in state:  # the convolution after an upsampling closes a stage
            blocks.append(count)
            count = 0
    return TinyDecoderConfig(latent_channels=first.shape[1], out_channels=last.shape[0], channels=first.shape[0],
                             blocks=(*blocks, count))
