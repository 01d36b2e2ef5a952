"""Training task of the KL autoencoder, latent diffusion's first stage (Rombach et al. 2022, sec. 3
and appendix G): an L1 or L2 reconstruction term plus a light KL penalty towards N(0, I), and from
step ``disc_start`` on, optionally, a PatchGAN discriminator's hinge loss (Esser et al. 2021, with a
fixed weight instead of their adaptive one; no LPIPS term); at the
end, PSNR/SSIM of held-out reconstructions and the latent scaling factor 1 / std(z) measured on
held-out images (sec. 4.3.2), which a latent diffusion model trained on top of it multiplies by."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

from genpix.config import check, to_dict
from genpix.data import ImageDataset
from genpix.io.images import make_grid, to_pil
from genpix.metrics.psnr import psnr
from genpix.metrics.ssim import ssim
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.patch_discriminator import PatchDiscriminator, patch_grid
from genpix.training.families import Family
from genpix.training.task import Batch

RECONSTRUCTIONS = ("l1", "l2")


@dataclass(frozen=True)
class AutoencoderTrainingConfig:
    """The ``model`` section of an autoencoder run: the network (small, f = 4 by default, for
    28-64 px images) and its objective."""

    image_size: int = 32  # H = W of the images (set from the data)
    channels: int = 3  # image channels in and out (set from the data)
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # channels per level; f = 2 ** (levels - 1)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    reconstruction: Literal["l1", "l2"] = "l1"  # |x - x_hat| (the LDM autoencoders) or (x - x_hat)^2
    kl_weight: float = 1e-6  # weight of KL(q(z|x) || N(0, I)) against the summed reconstruction error
    disc_start: int | None = None  # optimiser step from which the patch discriminator joins (None: never)
    disc_weight: float = 0.5  # weight of the adversarial term -E[D(x_hat)] (mean over patches)
    disc_layers: int = 2  # halvings in the patch discriminator
    scaling_factor: float | None = None  # 1 / std(z) on held-out images, measured at the end of training

    def __post_init__(self) -> None:
        check(self.reconstruction in RECONSTRUCTIONS,
              f"unknown reconstruction {self.reconstruction!r}; choose one of: {', '.join(RECONSTRUCTIONS)}")
        check(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        check(self.disc_start is None or self.disc_start >= 0, f"disc_start must be >= 0, got {self.disc_start}")
        check(self.disc_weight >= 0, f"disc_weight must be >= 0, got {self.disc_weight}")
        check(self.disc_layers >= 1 and (self.disc_start is None or patch_grid(self.image_size, self.disc_layers) >= 1),
              f"a patch discriminator with {self.disc_layers} layers needs images of at least "
              f"{3 * 2 ** self.disc_layers} px (--disc-layers)")
        check(self.scaling_factor is None or self.scaling_factor > 0,
              f"scaling_factor must be positive, got {self.scaling_factor}")
        network = self.network()  # validates the network's shape
        f = network.downsampling_factor
        check(self.image_size % f == 0, f"image size {self.image_size} must be a multiple of the autoencoder's "
                                        f"downsampling factor {f} (--image-size)")

    def network(self) -> AutoencoderConfig:
        """The AutoencoderKL config (scaling_factor 1 until measured)."""
        return AutoencoderConfig(in_channels=self.channels, out_channels=self.channels,
                                 block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                                 latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups,
                                 scaling_factor=self.scaling_factor or 1.0, sample_size=self.image_size)


class Reconstruction(nn.Module):
    """The autoencoder's training pass (what DDP wraps): x (B, C, H, W) in [-1, 1] and eps for
    the posterior sample z = mean + std eps -> (reconstruction, KL per image (B,))."""

    def __init__(self, autoencoder: AutoencoderKL) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.autoencoder.encode(x)
        return self.autoencoder.decode(posterior.mean + posterior.std * eps), posterior.kl()


class AutoencoderTask:
    family = "autoencoder"

    def __init__(self, config: AutoencoderTrainingConfig, *, lr: float, device: torch.device, seed: int = 0) -> None:
        # the scaling factor belongs to trained weights: measured again at the end of every run
        self.config, self.device = replace(config, scaling_factor=None), device
        self.autoencoder = AutoencoderKL(config.network()).to(device)
        self.optimizer = torch.optim.Adam(self.autoencoder.parameters(), lr=lr, betas=(0.5, 0.9))  # LDM's
        self.first_param = next(self.autoencoder.parameters())
        self.discriminator = None
        if config.disc_start is not None:
            self.discriminator = PatchDiscriminator(config.channels, layers=config.disc_layers).to(device)
            self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
        self.d_forward = self.discriminator  # under torchrun, through DDP
        self.reconstruction = Reconstruction(self.autoencoder)
        self.forward_pass = self.reconstruction  # what train_step calls; under torchrun, through DDP
        side = config.image_size // self.autoencoder.config.downsampling_factor
        self.latent_shape = (config.latent_channels, side, side)

    def modules(self) -> dict[str, torch.nn.Module]:
        extra = {} if self.discriminator is None else {"discriminator": self.discriminator}
        return {"autoencoder": self.autoencoder, **extra}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer, **({} if self.discriminator is None else {"adam_d": self.d_optimizer})}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def distribute(self, wrap) -> None:
        self.forward_pass = wrap(self.reconstruction)
        if self.discriminator is not None:
            self.d_forward = wrap(self.discriminator)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.autoencoder.train()
        x = batch.images * 2 - 1
        # the posterior sample's eps per image from the batch: the same whatever the number of processes
        x_hat, kl = self.forward_pass(x, batch.randn(*self.latent_shape))
        error = (x_hat - x).abs() if self.config.reconstruction == "l1" else (x_hat - x).square()
        nll = error.flatten(1).sum(1).mean()  # summed over pixels, as LDM's loss, so kl_weight keeps its scale
        kl = kl.mean()
        loss = nll + self.config.kl_weight * kl
        metrics = {"rec": error.detach().mean(), "kl": kl.detach()}
        adversarial = (self.discriminator is not None
                       and int(self.optimizer.state[self.first_param].get("step", 0)) >= self.config.disc_start)
        if adversarial:  # through the plain D, whose weights take no gradient here
            self.discriminator.train().requires_grad_(False)
            g_loss = -self.discriminator(x_hat).mean()
            self.discriminator.requires_grad_(True)
            loss = loss + self.config.disc_weight * g_loss
            metrics["g_loss"] = g_loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if adversarial:
            metrics["d_loss"] = self._discriminator_step(x, x_hat.detach())
        return {"loss": loss.detach(), **metrics}

    def _discriminator_step(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Hinge loss (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]) / 2 (Lim and Ye 2017): real, then
        reconstructed, one forward and backward each (as DDP wants)."""
        self.d_optimizer.zero_grad(set_to_none=True)
        real = 0.5 * torch.relu(1 - self.d_forward(x)).mean()
        real.backward()
        fake = 0.5 * torch.relu(1 + self.d_forward(x_hat)).mean()
        fake.backward()
        self.d_optimizer.step()
        return (real + fake).detach()

    @torch.no_grad()
    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        self.autoencoder.eval()
        x = batch.images[:16]
        x_hat = self.autoencoder(x * 2 - 1)[0].add(1).div(2).clamp(0, 1)
        pairs = torch.stack([x, x_hat], 1).flatten(0, 1)  # original, reconstruction, ...
        return {"reconstructions": make_grid(to_pil(pairs.float().cpu()), columns=8)}

    @torch.no_grad()
    def evaluate(self, data: ImageDataset, limit: int = 512) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM of posterior-mean reconstructions of up to ``limit`` held-out
        images, and the scaling factor 1 / std(z) of their posterior samples (stored in the config)."""
        self.autoencoder.eval()
        generator = torch.Generator().manual_seed(0)
        p, s, z = [], [], []
        for start in range(0, min(limit, len(data)), 64):
            x = data.images[start : min(start + 64, limit)].to(self.device).float() / 255
            posterior = self.autoencoder.encode(x * 2 - 1)
            x_hat = self.autoencoder.decode(posterior.mean).add(1).div(2).clamp(0, 1)
            p.append(psnr(x, x_hat))
            s.append(ssim(x, x_hat))
            eps = torch.randn(posterior.mean.shape, generator=generator).to(self.device)
            z.append((posterior.mean + posterior.std * eps).cpu())  # z ~ q(z|x), as the LDM encodes
        scaling_factor = 1.0 / torch.cat(z).float().std().item()
        self.config = replace(self.config, scaling_factor=scaling_factor)
        return {"psnr": torch.cat(p).mean().item(), "ssim": torch.cat(s).mean().item(),
                "scaling_factor": scaling_factor, "images": min(limit, len(data))}


FAMILY = Family(
    "autoencoder", "KL autoencoder, latent diffusion's first stage (Rombach et al. 2022)", AutoencoderTrainingConfig,
    AutoencoderTask, default_lr=5e-4, hidden=frozenset({"scaling_factor"}),  # measured at the end of training
    help={"block_out_channels": "channels per level; downsampling factor 2 ** (levels - 1)",
          "layers_per_block": "resnets per encoder level", "latent_channels": "channels of z",
          "norm_num_groups": "GroupNorm groups, dividing every level", "reconstruction": "reconstruction error",
          "kl_weight": "weight of the KL term",
          "disc_start": "step from which a PatchGAN discriminator (hinge loss) joins (default: none)",
          "disc_weight": "weight of the adversarial term", "disc_layers": "halvings in the patch discriminator"})
