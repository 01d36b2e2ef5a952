"""Training task of the GAN family: alternating D and G steps with Adam (seed 004, section 16.8.2).

Each step: first the discriminator (a real batch, then a fake batch, one update), then the
generator, on the same fake images through the updated D. Adam(2e-4, betas (0.5, 0.999)) as
Radford et al. (2016, section 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from genpix.arguments import positive_int
from genpix.config import to_dict
from genpix.data import ImageDataset
from genpix.io.images import make_grid, to_pil
from genpix.models.gan import Discriminator, GANConfig, Generator
from genpix.training.diagnostics import ModeCollapseDiagnostics
from genpix.training.families import Family
from genpix.training.flags import Flag
from genpix.training.task import Batch

BETAS = (0.5, 0.999)  # Radford et al. 2016: beta1 = 0.5 "helped stabilize training"


def discriminator_loss(real_logits: torch.Tensor | None, fake_logits: torch.Tensor | None,
                       real_target: float = 1.0) -> torch.Tensor:
    """-[log D(x) + log(1 - D(G(z)))] as binary cross-entropy on logits (seed 004, L(D)); either
    term alone when the other's logits are None.

    ``real_target`` < 1 is one-sided label smoothing (Salimans et al. 2016, section 3.4): only
    the real images' target is lowered, the fakes' stays 0.
    """
    loss = torch.zeros(())
    if real_logits is not None:
        loss = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    if fake_logits is not None:
        loss = loss.to(fake_logits.device) + F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits))
    return loss


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """G's objective on D's logits l = logit D(G(z)), to minimise.

    minimax: log(1 - D(G(z))) = -softplus(l) (seed 004, L(G); Goodfellow et al. 2014, eq. 1);
    non_saturating: -log D(G(z)) = softplus(-l) (Goodfellow et al. 2014, section 3), whose
    gradient stays large while D rejects the fakes.
    """
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown generator loss {kind!r}; choose non_saturating or minimax")


def r1_penalty(real_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over real images (Mescheder et al. 2018, eq. 9); D's loss adds gamma/2 of it."""
    (grad,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


class GANTask:
    family = "gan"

    def __init__(self, config: GANConfig, *, lr: float, device: torch.device, seed: int = 0,
                 preview: int = 64, diagnostics_every: int = 0) -> None:
        self.config, self.device = config, device
        self.generator = Generator(config).to(device)
        self.discriminator = Discriminator(config).to(device)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=BETAS)
        # what train_step calls for G and D's own step; under torchrun, through DDP (distribute)
        self.g_forward, self.d_forward = self.generator, self.discriminator
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=BETAS)
        # one fixed noise batch (and, when conditional, labels cycling over the classes: one
        # class per grid column), so the sample grids read frame to frame
        generator = torch.Generator().manual_seed(seed)
        self.fixed_z = torch.randn(preview, config.latent_dim, generator=generator).to(device)
        self.fixed_labels = (torch.arange(preview, device=device) % config.num_classes
                             if config.conditional else None)
        self.diagnostics_every = diagnostics_every
        self.diagnostics = ModeCollapseDiagnostics(self.generate, config.latent_dim,
                                                   config.num_classes if config.conditional else 0,
                                                   seed=seed, device=device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam_g": self.g_optimizer, "adam_d": self.d_optimizer}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def distribute(self, wrap) -> None:
        self.g_forward, self.d_forward = wrap(self.generator), wrap(self.discriminator)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, D = self.config, self.discriminator
        self.generator.train()
        D.train()
        x = batch.images * 2 - 1  # [0, 1] -> [-1, 1], the range of G's tanh
        real_labels = batch.labels if cfg.conditional else None
        fake_labels = None  # uniform over the classes, drawn per image like z
        if cfg.conditional:
            fake_labels = (batch.rand() * cfg.num_classes).long().clamp_max(cfg.num_classes - 1)
        fake = self.g_forward(batch.randn(cfg.latent_dim), fake_labels)

        # 1. discriminator: real, then fake (seed 004: maximise log D(x) + log(1 - D(G(z)))); one
        # forward and backward each (as DDP wants), batch norm sees each batch on its own
        self.d_optimizer.zero_grad(set_to_none=True)
        r1 = cfg.stabiliser == "r1"
        x.requires_grad_(r1)
        real_logits = self.d_forward(x, real_labels)
        target = cfg.real_target if cfg.stabiliser == "label_smoothing" else 1.0
        d_loss_real = discriminator_loss(real_logits, None, target)
        metrics = {}
        if r1:
            penalty = r1_penalty(real_logits, x)
            metrics["r1"] = penalty.detach()
            (d_loss_real + 0.5 * cfg.r1_gamma * penalty).backward()
        else:
            d_loss_real.backward()
        fake_logits = self.d_forward(fake.detach(), fake_labels)
        d_loss_fake = discriminator_loss(None, fake_logits)
        d_loss_fake.backward()
        self.d_optimizer.step()

        # 2. generator, through the updated D (the plain module: D's weights take no gradient)
        D.requires_grad_(False)
        g_loss = generator_loss(D(fake, fake_labels), cfg.loss)
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        D.requires_grad_(True)
        with torch.no_grad():
            d_real, d_fake = torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()
        return {"d_loss": (d_loss_real + d_loss_fake).detach(), "g_loss": g_loss.detach(),
                "d_real": d_real.detach(), "d_fake": d_fake, **metrics}

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G in eval mode (batch-norm running statistics): z -> images (B, C, H, W) in [0, 1]."""
        self.generator.eval()
        return (self.generator(z.to(self.device), labels) + 1) / 2

    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        columns = self.config.num_classes if self.config.conditional else None
        return {"samples": make_grid(to_pil(self.generate(self.fixed_z, self.fixed_labels)),
                                     columns=columns)}

    def diagnose(self, step: int, data: ImageDataset, out: Path) -> dict[str, Any] | None:
        """Mode-collapse figures every ``diagnostics_every`` steps (see training.diagnostics)."""
        if not self.diagnostics_every or step % self.diagnostics_every:
            return None
        return self.diagnostics(step, data, out)

    def evaluate(self, data: ImageDataset) -> dict[str, float]:
        return {}


def _gan_task_options(options: Mapping[str, Any], train_config: Any) -> dict[str, Any]:
    return {"diagnostics_every": options.get("diagnostics_every") or train_config.sample_every}


FAMILY = Family(
    "gan", "DCGAN (Radford et al. 2016; seed 003, seed 004 section 16.8.2)", GANConfig, GANTask, default_lr=2e-4,
    help={"latent_dim": "dimension of z", "width": "channels next to the image in G and D, doubling inwards "
                                                   "(Radford et al.'s ngf/ndf)",
          "cond": "class: label embedding into G, projection discriminator",
          "embed_dim": "size of G's label embedding (--cond class)",
          "loss": "generator loss: -log D(G(z)) (non_saturating) or the minimax log(1 - D(G(z)))",
          "stabiliser": "one-sided label smoothing, R1 gradient penalty, or spectral norm in D",
          "real_target": "D's target for real images under label_smoothing", "r1_gamma": "weight of the R1 penalty"},
    options=(Flag("diagnostics_every", int, "steps between mode-collapse diagnostics in diagnostics.jsonl "
                                            "(default: --sample-every)", parse=positive_int),),
    task_options=_gan_task_options)
