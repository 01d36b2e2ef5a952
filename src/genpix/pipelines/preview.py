"""Live previews and a fast final decode with a tiny (TAESD) decoder.

:class:`TinyDecoderSpace` has the ``decode`` of pipelines/decoders.py's spaces (latents the sampler
works on -> pictures in [0, 1] on the CPU), so it can stand in for the full decoder (``--vae tiny``);
:func:`preview_images` turns a latent batch (the sampler's x or its x0 estimate) into PIL images.
A bundled latent model keeps its distilled decoder beside its weights, as
``preview_decoder.safetensors`` (TAESD's key layout, float16): :func:`find_preview_decoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from genpix.io.images import to_pil
from genpix.io.tiny_decoder import load_tiny_decoder
from genpix.models.taesd import TinyDecoder

PREVIEW_FILE = "preview_decoder.safetensors"


class TinyDecoderSpace:
    """Decodes z * scaling_factor (B, c, h, w) straight to pictures (B, C, h f, w f) in [0, 1]."""

    clip_x0 = False

    def __init__(self, decoder: TinyDecoder, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.decoder = decoder.eval().requires_grad_(False).to(self.device)
        self.factor = decoder.config.upsampling_factor
        self.channels = decoder.config.out_channels
        self.latent_channels = decoder.config.latent_channels

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> TinyDecoderSpace:
        return cls(load_tiny_decoder(path), device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.decoder.parameters()).dtype
        return self.decoder(latents.to(self.device, dtype)).float().clamp(0, 1).cpu()

    def preview_images(self, latents: torch.Tensor) -> list[Image.Image]:
        """A latent batch (B, c, h, w) -> B PIL images (mode L for one channel, RGB for three)."""
        return to_pil(self.decode(latents))


def preview_images(decoder: TinyDecoder, latents: torch.Tensor) -> list[Image.Image]:
    """A latent batch (B, c, h, w) -> B PIL preview images, decoded by ``decoder`` where it lives."""
    return TinyDecoderSpace(decoder, next(decoder.parameters()).device).preview_images(latents)


def find_preview_decoder(model_dir: str | Path) -> Path | None:
    """The preview decoder file kept beside a model folder's weights, if it has one."""
    path = Path(model_dir) / PREVIEW_FILE
    return path if path.is_file() else None
