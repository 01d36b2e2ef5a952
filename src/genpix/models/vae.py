"""The convolutional variational autoencoder of Kingma and Welling (2014), in the seed's layout.

Encoder: strided 3x3 convolutions (32, 64 channels), a dense layer, then two heads for
``mu`` and ``logvar`` (listing 17.1). Sampling: ``z = mu + exp(0.5 * logvar) * eps`` (listing 17.2,
the reparameterisation trick). Decoder: dense to the last feature map, transposed strided
convolutions back to the image, a sigmoid output (listing 17.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import check


@dataclass(frozen=True)
class VAEConfig:
    image_size: int = 28  # H = W of the images, divisible by 2 ** len(widths)
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    latent_dim: int = 2  # dimension of z; 2 gives the seed's manifold figure
    widths: tuple[int, ...] = (32, 64)  # channels of the strided convolutions, each halves H and W
    hidden_dim: int = 16  # the dense layer between the feature map and the mu / logvar heads
    reconstruction: Literal["bce", "mse"] = "bce"  # -log p(x|z): Bernoulli (BCE) or Gaussian (MSE)
    beta: float = 1.0  # weight of the KL term (beta-VAE, Higgins et al. 2017); 1 is the ELBO

    def __post_init__(self) -> None:
        check(self.latent_dim >= 1, f"latent_dim must be at least 1, got {self.latent_dim}")
        check(self.hidden_dim >= 1, f"hidden_dim must be at least 1, got {self.hidden_dim}")
        check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        check(len(self.widths) >= 1 and all(w >= 1 for w in self.widths), "widths must be positive")
        factor = 2 ** len(self.widths)
        check(
            self.image_size >= factor and self.image_size % factor == 0,
            f"image_size {self.image_size} must be a multiple of {factor} "
            f"(2 ** number of strided convolutions)",
        )
        check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")

    @property
    def feature_size(self) -> int:
        """H = W of the last feature map (7 for 28x28 and two strided convolutions)."""
        return self.image_size // 2 ** len(self.widths)


class VAE(nn.Module):
    """Encoder, reparameterised sampler and decoder; images are (B, C, H, W) in [0, 1]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c, widths = config.channels, config.widths
        layers: list[nn.Module] = []
        for w_in, w_out in zip((c, *widths[:-1]), widths):
            layers += [nn.Conv2d(w_in, w_out, 3, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = widths[-1] * config.feature_size**2
        self.hidden = nn.Sequential(nn.Linear(flat, config.hidden_dim), nn.ReLU())
        self.to_mu = nn.Linear(config.hidden_dim, config.latent_dim)
        self.to_logvar = nn.Linear(config.hidden_dim, config.latent_dim)

        self.from_z = nn.Sequential(nn.Linear(config.latent_dim, flat), nn.ReLU())
        layers = []
        rev = widths[::-1]
        for w_in, w_out in zip((rev[0], *rev[:-1]), rev):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),
            ]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(rev[-1], c, 3, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> (mu, logvar), each (B, latent_dim)."""
        h = self.hidden(self.encoder(x))
        return self.to_mu(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> logits (B, C, H, W); the image is their sigmoid."""
        cfg = self.config
        h = self.from_z(z).view(-1, cfg.widths[-1], cfg.feature_size, cfg.feature_size)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       eps: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu + exp(0.5 logvar) * eps, eps ~ N(0, I) (Kingma and Welling 2014, eq. 10);
        ``eps`` (B, latent_dim) is drawn from the global RNG when not given."""
        return mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)

    def loss(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The negative ELBO, averaged over the batch (``eps`` as in :meth:`reparameterize`).

        reconstruction: -log p(x|z) summed over pixels (BCE, or squared error for ``mse``);
        kl: KL(q(z|x) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) over latent dims
        (Kingma and Welling 2014, appendix B); loss = reconstruction + beta * kl.
        """
        mu, logvar = self.encode(x)
        logits = self.decode_logits(self.reparameterize(mu, logvar, eps))
        if self.config.reconstruction == "bce":
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            rec = (torch.sigmoid(logits) - x) ** 2
        reconstruction = rec.flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp())).sum(1).mean()
        return {
            "loss": reconstruction + self.config.beta * kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: (B, C, H, W) in [0, 1] -> the same shape, in [0, 1]."""
        return self.decode(self.encode(x)[0])
