"""Upscaling pictures and latents the way sd-webui does (shared/reference/sdxl-lora-upscalers.md 4.4-4.5).

* Plain upscalers: ``None`` (Lanczos to the target), ``Lanczos``, ``Nearest`` (PIL resizes).
* Model upscalers: an ESRGAN / Real-ESRGAN network applied in overlapping tiles (pipelines/tiling.py)
  to the picture in BGR order in [0, 1], as sd-webui's ``modules/upscaler_utils.py`` feeds it; the
  output is clamped, scaled to 0..255 and rounded.
* ``Upscaler.upscale(image, scale)`` is sd-webui's ``modules/upscaler.py`` ``Upscaler.upscale``: the
  target is ``(w * scale) // 8 * 8`` by ``(h * scale) // 8 * 8``; the model runs up to 3 times while
  the picture is smaller than that, then a Lanczos resize hits the target exactly.
* :func:`upscale_image` is ``images.resize_image``'s "just resize" for the hires fix and the Extras
  tab: to an exact size (scale = the larger ratio, then Lanczos to the size) or by a scale.
* :func:`upscale_latent`: sd-webui's latent upscale modes (``modules/shared.py``
  ``latent_upscale_modes``), ``F.interpolate`` of the latent to the target size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genpix.errors import GenpixError
from genpix.io.upscaler_file import UpscalerSpec
from genpix.pipelines.tiling import TileConfig, tiled_apply

LANCZOS = Image.Resampling.LANCZOS
MAX_OUTPUT_PIXELS = 8192 * 8192  # a limit on any picture an upscaler makes (64 megapixels)
MAX_SCALE = 16.0
PLAIN_UPSCALERS = ("None", "Lanczos", "Nearest")

# name -> (F.interpolate mode, antialias), as sd-webui's modules/shared.py latent_upscale_modes
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


class UpscaleError(GenpixError):
    """An upscale that cannot be done: unknown mode, bad scale or size, output over the limit."""


def upscale_latent(latent: torch.Tensor, mode: str, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) latent -> (B, C, height, width) with one of :data:`LATENT_UPSCALE_MODES`
    (sd-webui processing.py: ``F.interpolate(samples, size=(H // 8, W // 8), mode=..., antialias=...)``)."""
    if mode not in LATENT_UPSCALE_MODES:
        raise UpscaleError(f"unknown latent upscale mode {mode!r}; known: {', '.join(LATENT_UPSCALE_MODES)}")
    if height < 1 or width < 1:
        raise UpscaleError(f"latent target size must be positive, got {width}x{height}")
    interpolation, antialias = LATENT_UPSCALE_MODES[mode]
    return F.interpolate(latent, size=(height, width), mode=interpolation, antialias=antialias)


def check_size(width: int, height: int, limit: int = MAX_OUTPUT_PIXELS) -> None:
    if width < 1 or height < 1:
        raise UpscaleError(f"upscaled size must be positive, got {width}x{height}")
    if width * height > limit:
        raise UpscaleError(f"upscaling to {width}x{height} would make {width * height} pixels; "
                           f"the limit is {limit} ({int(limit ** 0.5)}x{int(limit ** 0.5)})")


@dataclass
class Upscaler:
    """One named upscaler: a plain PIL resize, or a network (``model`` with its ``spec``)."""

    name: str
    model: nn.Module | None = None
    spec: UpscalerSpec | None = None
    tile: TileConfig = field(default_factory=TileConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    limit: int = MAX_OUTPUT_PIXELS

    def __post_init__(self) -> None:
        if self.model is None and self.name not in PLAIN_UPSCALERS:
            raise UpscaleError(f"{self.name!r} is not a plain upscaler ({', '.join(PLAIN_UPSCALERS)}) "
                               f"and has no model")

    @property
    def scale(self) -> int:
        """The model's native factor (4 for the plain ones, as sd-webui lists them)."""
        return self.spec.scale if self.spec is not None else 4

    def do_upscale(self, image: Image.Image, scale: float) -> Image.Image:
        """One pass: the network once, or the PIL resize by ``scale`` (``None`` leaves the picture)."""
        if self.model is not None:
            check_size(image.width * self.scale, image.height * self.scale, self.limit)
            return self._run_model(image)
        if self.name == "None":
            return image
        size = (int(image.width * scale), int(image.height * scale))
        check_size(*size, self.limit)
        return image.resize(size, LANCZOS if self.name == "Lanczos" else Image.Resampling.NEAREST)

    def upscale(self, image: Image.Image, scale: float) -> Image.Image:
        """sd-webui ``Upscaler.upscale``: to ``(w * scale) // 8 * 8`` x ``(h * scale) // 8 * 8`` (at least 8)."""
        if not 1 <= scale <= MAX_SCALE:
            raise UpscaleError(f"upscale factor must be between 1 and {MAX_SCALE:g}, got {scale:g}")
        if self.model is not None and self.scale == 1:
            raise UpscaleError(f"{self.name} is a 1x model (it restores, it does not enlarge); "
                               f"choose an upscaler with a scale above 1")
        dest = (max(8, int(image.width * scale // 8 * 8)), max(8, int(image.height * scale // 8 * 8)))
        check_size(*dest, self.limit)
        for _ in range(3):
            if image.width >= dest[0] and image.height >= dest[1]:
                break
            shape = image.size
            image = self.do_upscale(image, scale)
            if image.size == shape:
                break
        return image if image.size == dest else image.resize(dest, LANCZOS)

    @torch.no_grad()
    def _run_model(self, image: Image.Image) -> Image.Image:
        channels = self.spec.channels
        gray = image.mode in ("L", "I;16", "I", "F") and channels == 1
        pixels = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.float32) / 255
        x = torch.from_numpy(pixels.copy()).to(self.device)
        x = x[None, None] if gray else x.permute(2, 0, 1).flip(0)[None]  # RGB -> BGR, as sd-webui
        if channels == 1 and not gray:
            x = x.transpose(0, 1)  # each colour channel through the 1-channel network
        elif channels == 3 and gray:
            x = x.expand(1, 3, -1, -1)
        y = tiled_apply(self.model, x, self.scale, self.tile).clamp_(0, 1)
        if channels == 1 and not gray:
            y = y.transpose(0, 1)
        array = (y[0] * 255).round_().to(torch.uint8).cpu()
        if gray:
            return Image.fromarray(array[0].numpy(), "L")
        return Image.fromarray(array.flip(0).permute(1, 2, 0).contiguous().numpy(), "RGB")


def upscale_image(image: Image.Image, upscaler: Upscaler, scale: float | None = None,
                  size: tuple[int, int] | None = None) -> Image.Image:
    """Upscale by ``scale`` (sd-webui's Extras "Scale by": target rounded down to a multiple of 8),
    or to exactly ``size`` = (width, height) (sd-webui ``images.resize_image`` mode 0: the upscaler by
    the larger ratio when above 1, then Lanczos to the size): what the hires fix calls."""
    if (scale is None) == (size is None):
        raise UpscaleError("give exactly one of scale or size")
    if scale is not None:
        return upscaler.upscale(image, scale)
    width, height = size
    check_size(width, height, upscaler.limit)
    ratio = max(width / image.width, height / image.height)
    if ratio > MAX_SCALE:
        raise UpscaleError(f"upscaling {image.width}x{image.height} to {width}x{height} is a factor of "
                           f"{ratio:.3g}; the largest is {MAX_SCALE:g}")
    if ratio > 1 and upscaler.name != "None":
        image = upscaler.upscale(image, ratio)
    return image if image.size == (width, height) else image.resize((width, height), LANCZOS)


__all__ = ["LATENT_UPSCALE_MODES", "MAX_OUTPUT_PIXELS", "PLAIN_UPSCALERS", "UpscaleError", "Upscaler",
           "upscale_image", "upscale_latent"]
