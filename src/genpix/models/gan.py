"""DCGAN: the generator and discriminator of Radford, Metz and Chintala (2016), as the seeds teach it.

The architecture guidelines (Radford et al. 2016, section 3; seed 003 "深度卷积 GANs"):

- no pooling: strided convolutions in D, fractional-strided (transposed) convolutions in G;
- batch norm in both networks, except G's output layer and D's input layer;
- no fully connected hidden layers: G's first layer is a transposed convolution of z, seen as a
  1x1 map, to the start map (4x4, or 7x7 for 28x28 images, the seed's ``Dense(7*7*128)``); D's
  last layer is a convolution over its whole last map to one logit;
- ReLU in G with a tanh output (images in [-1, 1]); LeakyReLU(0.2) in D.

Class conditioning (``cond="class"``): a learned label embedding concatenated to z in G (Mirza
and Osindero 2014), and the projection discriminator of Miyato and Koyama (2018, eq. 3) in D:
``logit = w . phi(x) + embed(y) . phi(x)`` with ``phi(x)`` D's flattened last feature map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genpix.config import check

# image size -> (side of G's start map, number of stride-2 layers); each stride-2 layer doubles it
IMAGE_SIZES: dict[int, tuple[int, int]] = {16: (4, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4)}
Loss = Literal["non_saturating", "minimax"]
Stabiliser = Literal["none", "label_smoothing", "r1", "spectral_norm"]
LOSSES: tuple[str, ...] = ("non_saturating", "minimax")
STABILISERS: tuple[str, ...] = ("none", "label_smoothing", "r1", "spectral_norm")


@dataclass(frozen=True)
class GANConfig:
    image_size: int = 28  # one of IMAGE_SIZES
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    latent_dim: int = 100  # dimension of z ~ N(0, I) (the seed's latent_dim = 100)
    width: int = 64  # channels next to the image (G's last hidden, D's first layer); x2 per layer inwards
    cond: Literal["none", "class"] = "none"  # class: label embedding into G, projection into D
    num_classes: int = 0  # classes of the training data (0 = unlabelled); used when cond = class
    embed_dim: int = 50  # size of G's label embedding, concatenated to z (cond = class)
    loss: Loss = "non_saturating"  # G's objective: -log D(G(z)), or the minimax log(1 - D(G(z)))
    stabiliser: Stabiliser = "none"  # none, label_smoothing, r1 or spectral_norm (in D)
    real_target: float = 0.9  # D's target for real images under label_smoothing (one-sided)
    r1_gamma: float = 10.0  # weight gamma of the R1 penalty (gamma / 2) E ||grad D(x)||^2

    def __post_init__(self) -> None:
        sizes = ", ".join(map(str, IMAGE_SIZES))
        check(self.image_size in IMAGE_SIZES,
              f"image_size {self.image_size} cannot be produced by the DCGAN generator (a 4x4 or 7x7 "
              f"start map doubled by strided transposed convolutions); choose one of {sizes}")
        check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        check(self.latent_dim >= 1, f"latent_dim must be at least 1, got {self.latent_dim}")
        check(self.width >= 1, f"width must be at least 1, got {self.width}")
        check(self.embed_dim >= 1, f"embed_dim must be at least 1, got {self.embed_dim}")
        check(self.num_classes >= 0, f"num_classes must be >= 0, got {self.num_classes}")
        check(self.cond == "none" or self.num_classes >= 2,
              "--cond class needs a dataset with class labels (fashion-mnist, mnist, digits, or a "
              "folder with one sub-folder per class)")
        check(0.5 < self.real_target <= 1, f"real_target must be in (0.5, 1], got {self.real_target}")
        check(self.r1_gamma >= 0, f"r1_gamma must be >= 0, got {self.r1_gamma}")

    @property
    def start_size(self) -> int:
        """Side of G's first feature map (and D's last): 7 for 28x28 images, else 4."""
        return IMAGE_SIZES[self.image_size][0]

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of G's hidden layers from z to the image, e.g. (128, 64) at 28x28."""
        n = IMAGE_SIZES[self.image_size][1]
        return tuple(self.width * 2 ** (n - 1 - i) for i in range(n))

    @property
    def conditional(self) -> bool:
        return self.cond == "class"


def dcgan_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), batch-norm scales from N(1, 0.02) (Radford et al. 2016, section 4)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """G: z (B, latent_dim) [+ labels (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        extra = config.embed_dim if config.conditional else 0
        self.embed = nn.Embedding(config.num_classes, config.embed_dim) if config.conditional else None
        # (B, latent_dim + extra, 1, 1) -> (B, widths[0], start, start): the "project and reshape"
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.latent_dim + extra, widths[0], config.start_size, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for w_in, w_out in zip(widths, widths[1:]):  # each doubles H and W
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(w_out), nn.ReLU()]
        # no batch norm at the output layer; tanh (seed 003: "输出层使用 Tanh")
        layers += [nn.ConvTranspose2d(widths[-1], config.channels, 4, stride=2, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim), labels int64 (B,) for a class-conditional G -> (B, C, H, W) in [-1, 1]."""
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional generator needs labels")
            z = torch.cat([z, self.embed(labels)], 1)  # (B, latent_dim + embed_dim)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """D: images (B, C, H, W) in [-1, 1] [+ labels (B,)] -> logits (B,); D(x) = sigmoid(logit).

    With ``stabiliser="spectral_norm"`` every weight is spectrally normalised (Miyato et al. 2018)
    and batch norm is left out, as in their networks: a batch norm after a normalised layer would
    rescale it and undo the Lipschitz bound.
    """

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        sn = config.stabiliser == "spectral_norm"
        widths = config.widths[::-1]  # e.g. (64, 128) at 28x28: from the image inwards
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip((config.channels, *widths[:-1]), widths)):
            layers.append(nn.Conv2d(w_in, w_out, 4, stride=2, padding=1, bias=i == 0 or sn))
            if i > 0 and not sn:  # no batch norm at the input layer (Radford et al. 2016)
                layers.append(nn.BatchNorm2d(w_out))
            layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers)  # (B, widths[-1], start, start): phi(x)
        self.out = nn.Conv2d(widths[-1], 1, config.start_size)  # one logit per image, no FC layer
        features = widths[-1] * config.start_size**2
        self.embed = nn.Embedding(config.num_classes, features) if config.conditional else None
        self.apply(dcgan_init)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if sn:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Embedding)):
                    spectral_norm(module)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> logits (B,)."""
        h = self.features(x)
        logit = self.out(h).flatten()  # (B,)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional discriminator needs labels")
            # projection (Miyato and Koyama 2018, eq. 3): + <embed(y), phi(x)>
            logit = logit + (self.embed(labels) * h.flatten(1)).sum(1)
        return logit
