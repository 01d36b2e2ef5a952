"""The parts a :class:`~genpix.pipelines.pipeline.DiffusionPipeline` is built from, and the network
adapters that put genpix's U-Nets behind one call ``network(x, t, **cond)``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from genpix.diffusion import schedules
from genpix.diffusion.denoiser import Denoiser, DiscreteDenoiser
from genpix.errors import GenpixError
from genpix.pipelines.conditioning import Conditioner
from genpix.pipelines.decoders import AutoencoderSpace, PixelSpace
from genpix.pipelines.safety import CombinedCheck


@dataclass(frozen=True)
class Parts:
    conditioner: Conditioner  # prompt / class -> the network's conditioning (pipelines/conditioning.py)
    denoiser: Denoiser  # D(x, sigma, **cond) -> x0 (diffusion/denoiser.py)
    space: PixelSpace | AutoencoderSpace  # where sampling happens; encode/decode pictures (pipelines/decoders.py)
    safety: CombinedCheck  # after decoding (pipelines/safety.py); no checks: CombinedCheck(())
    # DDIM and PLMS end at alpha_bar = 1 (True), or at alphas_cumprod[0] as Stable Diffusion's
    # schedulers do (diffusers' set_alpha_to_one=False, CompVis' ddim_alphas_prev)
    set_alpha_to_one: bool = True
    # the modules to move, prepack or patch (U-Net, text encoder, autoencoder), by role
    modules: tuple[tuple[str, torch.nn.Module], ...] = ()
    networks: Any = None  # LoRA and embedding folders (pipelines/extra_networks.py ExtraNetworks), or None
    # a tiny decoder for live previews (pipelines/preview.py, TAESD); None: the space's own decoder
    preview: object | None = None
    # the noise schedule the denoiser samples on (schedules.NOISE_SCHEDULE_LABELS): "default", the
    # training alphas_cumprod, or "ztsnr", rescaled to zero terminal SNR (:func:`with_noise_schedule`)
    noise_schedule: str = "default"


def with_noise_schedule(parts: Parts, noise_schedule: str) -> Parts:
    """The parts sampling on ``noise_schedule`` (a key of schedules.NOISE_SCHEDULE_LABELS): "ztsnr"
    puts the network behind a discrete denoiser on its alphas_cumprod rescaled to zero terminal SNR
    (Lin et al. 2023, Algorithm 1, with sd-webui's finite last value); "default" keeps the parts'
    own schedule, so a model trained with zero terminal SNR stays on it. The shared parts never change."""
    if noise_schedule == "default" or noise_schedule == parts.noise_schedule:
        return parts
    denoiser = parts.denoiser
    if not isinstance(denoiser, DiscreteDenoiser):
        raise GenpixError(f"the {schedules.NOISE_SCHEDULE_LABELS[noise_schedule]} noise schedule rescales a "
                          f"discrete training schedule; this model's denoiser is a {type(denoiser).__name__}")
    rescaled = schedules.rescale_zero_terminal_snr(denoiser.alphas_cumprod)
    return replace(parts, denoiser=DiscreteDenoiser(denoiser.network, rescaled, denoiser.prediction),
                   noise_schedule=noise_schedule)


class LatentUNet:
    """A cross-attention U-Net (models/sd_unet.py) as ``network(x, t, context, concat=None, **added)``:
    an inpainting model's mask and masked-image latents ``concat`` (B, 5, h, w) joined on the
    channels (the LDM ``c_concat``), inputs cast to the U-Net's dtype (float16 with --half) and the
    output back to float32."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype = torch.float32) -> None:
        self.unet, self.dtype = unet, dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 concat: torch.Tensor | None = None, **added: Any) -> torch.Tensor:
        x = x if concat is None else torch.cat([x, concat], dim=1)
        added = {k: v.to(self.dtype) for k, v in added.items()}
        return self.unet(x.to(self.dtype), t, context.to(self.dtype), **added).float()
