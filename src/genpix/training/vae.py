"""Training task of the VAE family: Adam on the negative ELBO (seed listing 17.5)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from genpix.config import to_dict
from genpix.data import ImageDataset
from genpix.io.images import make_grid, to_pil
from genpix.metrics.psnr import psnr
from genpix.metrics.ssim import ssim
from genpix.models.vae import VAE, VAEConfig
from genpix.training.families import Family
from genpix.training.task import Batch


class VAETask:
    family = "vae"

    def __init__(self, config: VAEConfig, *, lr: float, device: torch.device, seed: int = 0,
                 preview: int = 64) -> None:
        self.config = config
        self.device = device
        self.vae = VAE(config).to(device)
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr)
        self.negative_elbo = self.vae.loss  # what train_step calls; under torchrun, through DDP (distribute)
        # one fixed noise batch, so the sample grids read frame to frame
        generator = torch.Generator().manual_seed(seed)
        self.fixed_z = torch.randn(preview, config.latent_dim, generator=generator).to(device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def distribute(self, wrap) -> None:
        self.negative_elbo = wrap(self.vae, "loss")

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.vae.train()
        # eps from the batch: the same noise per image whatever the number of processes
        terms = self.negative_elbo(batch.images, batch.randn(self.config.latent_dim))
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
        return terms

    @torch.no_grad()
    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        self.vae.eval()
        x = batch.images[:16]
        pairs = torch.stack([x, self.vae.reconstruct(x)], 1).flatten(0, 1)  # original, recon, ...
        return {"samples": make_grid(to_pil(self.vae.decode(self.fixed_z))),
                "reconstructions": make_grid(to_pil(pairs), columns=8)}

    def evaluate(self, data: ImageDataset) -> dict[str, float]:
        return reconstruction_metrics(self.vae, data, self.device)


@torch.no_grad()
def reconstruction_metrics(vae: VAE, data: ImageDataset, device: torch.device,
                           batch_size: int = 500) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of posterior-mean reconstructions over ``data``."""
    vae.eval()
    p, s = [], []
    for start in range(0, len(data), batch_size):
        x = data.images[start : start + batch_size].to(device).float() / 255
        r = vae.reconstruct(x)
        p.append(psnr(x, r))
        s.append(ssim(x, r))
    return {"psnr": torch.cat(p).mean().item(), "ssim": torch.cat(s).mean().item(),
            "images": len(data)}


FAMILY = Family(
    "vae", "convolutional VAE (seed listings 17.1-17.5)", VAEConfig, VAETask, default_lr=1e-3,
    help={"latent_dim": "dimension of z", "hidden_dim": "dense layer before mu/logvar",
          "widths": "channels of the strided convolutions", "reconstruction": "reconstruction term",
          "beta": "weight of the KL term"})
