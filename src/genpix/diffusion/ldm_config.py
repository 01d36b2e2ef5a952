"""The ``model`` section of a latent diffusion model (Rombach et al. 2022): the frozen first-stage
autoencoder it diffuses in, the conditioning encoder tau_theta (learned text transformer, frozen
MiniLM, class embedding or none), the cross-attention U-Net, the discrete noise schedule and the
training objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from genpix.config import check
from genpix.diffusion import schedules
from genpix.diffusion.config import alphas_cumprod_table, discrete_noise_levels
from genpix.diffusion.denoiser import DiscreteDenoiser, Network
from genpix.models.autoencoder import AutoencoderConfig
from genpix.models.colour_head import ColourHeadConfig
from genpix.models.ldm import Conditioner, LatentDiffusionModel
from genpix.models.sd_unet import SDUNetConfig, heads_for
from genpix.models.text import TEXT_ENCODERS, SentenceEncoder, SmallTextEncoderConfig

CONDS = ("none", "class", "text")


@dataclass(frozen=True)
class LDMConfig:
    image_size: int = 32  # H = W of the images (set from the data)
    channels: int = 3  # image channels (set from the data)
    first_stage: AutoencoderConfig | None = None  # the --autoencoder's network, with its measured scaling_factor
    # conditioning: tau_theta maps the condition to the cross-attention context (sec. 3.3)
    cond: Literal["none", "class", "text"] = "text"
    text_encoder: Literal["learned", "minilm"] = "learned"  # learned: trained jointly; minilm: frozen
    text_width: int = 128  # the learned encoder: width (= context D), layers, heads, bytes per caption
    text_layers: int = 2
    text_heads: int = 4
    text_max_length: int = 64
    num_classes: int = 0  # classes of the dataset (set from the data)
    cond_drop_prob: float = 0.1  # captions -> "" (labels -> the null class) for guidance (Ho and Salimans 2022)
    colour_token: bool = False  # text: the colour head's token joins the context (models/colour_head.py)
    colour_loss_weight: float = 0.1  # weight of the colour head's cross-entropy in the training loss
    colour_dropout: float = 0.1  # dropout in the colour head's classifier
    colour_word_dropout: float = 0.0  # share of captions whose colour words the U-Net does not see
    colour_head_only: bool = False  # train the colour head's reading alone (the rest of the model frozen)
    # the U-Net eps_theta(z_t, t, tau_theta(y)) over latents
    block_out_channels: tuple[int, ...] = (64, 128)
    layers_per_block: int = 1
    head_channels: int = 32  # channels per attention head
    norm_num_groups: int = 32
    context_dim: int = 128  # D of the class embedding / the null context (text encoders set their own)
    # the forward process and the objective (LDM: scaled_linear 0.00085 .. 0.012 over T = 1000)
    schedule: Literal["linear", "scaled_linear", "cosine"] = "scaled_linear"
    timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction: Literal["eps", "v", "x0"] = "eps"
    loss: Literal["mse", "mae"] = "mse"
    min_snr_gamma: float | None = None
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check(self.cond in CONDS, f"unknown cond {self.cond!r}; choose one of: {', '.join(CONDS)}")
        check(self.text_encoder in TEXT_ENCODERS,
              f"unknown text encoder {self.text_encoder!r}; choose one of: {', '.join(TEXT_ENCODERS)}")
        check(self.schedule in schedules.BETA_SCHEDULES,
              f"unknown schedule {self.schedule!r}; choose one of: {', '.join(schedules.BETA_SCHEDULES)}")
        check(self.cond != "class" or self.num_classes >= 1,
              "--cond class needs a dataset with class labels (this one has none)")
        check(self.timesteps >= 2, f"timesteps must be at least 2, got {self.timesteps}")
        check(0 < self.beta_start < self.beta_end < 1,
              f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        check(0 <= self.cond_drop_prob < 1, f"cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        check(not self.colour_token or self.cond == "text", "colour_token needs --cond text (it reads the caption)")
        check(self.colour_loss_weight >= 0, f"colour_loss_weight must be >= 0, got {self.colour_loss_weight}")
        check(0 <= self.colour_dropout < 1, f"colour_dropout must be in [0, 1), got {self.colour_dropout}")
        check(0 <= self.colour_word_dropout < 1,
              f"colour_word_dropout must be in [0, 1), got {self.colour_word_dropout}")
        check(self.colour_token or not self.colour_word_dropout, "colour_word_dropout needs --colour-token")
        check(self.colour_token or not self.colour_head_only, "colour_head_only needs --colour-token")
        check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check(self.grad_clip >= 0 and self.weight_decay >= 0, "grad_clip and weight_decay must be >= 0")
        check(self.min_snr_gamma is None or self.min_snr_gamma > 0,
              f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        check(self.context_dim >= 1 and self.head_channels >= 1, "context_dim and head_channels must be >= 1")
        check(all(c % self.head_channels == 0 for c in self.block_out_channels),
              f"head_channels {self.head_channels} must divide every level's channels {self.block_out_channels}")
        if self.cond == "text" and self.text_encoder == "learned":
            self.text_config()  # validates width, layers and heads
        if self.first_stage is not None:
            f = self.first_stage.downsampling_factor
            down = 2 ** (len(self.block_out_channels) - 1)
            check(self.first_stage.in_channels == self.channels,
                  f"the autoencoder takes {self.first_stage.in_channels}-channel images, the data has "
                  f"{self.channels} (use --channels {self.first_stage.in_channels})")
            check(self.image_size % (f * down) == 0,
                  f"image size {self.image_size} must be a multiple of {f * down} (the autoencoder's factor {f} "
                  f"times the U-Net's {down})")
            self.unet_config()  # validates the network's shape

    @property
    def guided(self) -> bool:
        """Whether the model has a condition to guide towards (text or class)."""
        return self.cond != "none"

    def text_config(self) -> SmallTextEncoderConfig:
        return SmallTextEncoderConfig(width=self.text_width, layers=self.text_layers, heads=self.text_heads,
                                      max_length=self.text_max_length)

    @property
    def cross_attention_dim(self) -> int:
        """D of the context tokens the U-Net attends to."""
        if self.cond == "text":
            return SentenceEncoder.dim if self.text_encoder == "minilm" else self.text_width
        return self.context_dim

    def unet_config(self) -> SDUNetConfig:
        """The SD layout, small: cross-attention at every level."""
        check(self.first_stage is not None, "the latent U-Net needs the autoencoder (first_stage) to size it")
        levels, c = len(self.block_out_channels), self.first_stage.latent_channels
        return SDUNetConfig(sample_size=self.image_size // self.first_stage.downsampling_factor,
                            in_channels=c, out_channels=c, block_out_channels=self.block_out_channels,
                            down_block_types=("CrossAttnDownBlock2D",) * levels,
                            up_block_types=("CrossAttnUpBlock2D",) * levels, layers_per_block=self.layers_per_block,
                            num_attention_heads=heads_for(self.block_out_channels, self.head_channels),
                            cross_attention_dim=self.cross_attention_dim, use_linear_projection=True,
                            norm_num_groups=self.norm_num_groups)

    def colour_head_config(self) -> ColourHeadConfig:
        return ColourHeadConfig(self.cross_attention_dim, dropout=self.colour_dropout)

    def network(self) -> LatentDiffusionModel:
        """eps_theta with tau_theta, freshly initialised (the MiniLM encoder loaded, frozen)."""
        conditioner = Conditioner(self.cond, self.cross_attention_dim, text_encoder=self.text_encoder,
                                  text=self.text_config() if self.cond == "text" else None,
                                  num_classes=self.num_classes,
                                  colour=self.colour_head_config() if self.colour_token else None)
        return LatentDiffusionModel(self.unet_config(), conditioner)

    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t, float32 (T,) (a fresh copy)."""
        return alphas_cumprod_table(self.schedule, self.timesteps, self.beta_start, self.beta_end).clone()

    def noise_levels(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t, alpha, sigma_vp), each (B,), for uniform draws u (B,): see DDPMConfig.noise_levels."""
        return discrete_noise_levels(u, self.alphas_cumprod())

    def denoiser(self, network: Network) -> DiscreteDenoiser:
        return DiscreteDenoiser(network, self.alphas_cumprod(), self.prediction)
