"""Inpainting masks and masked content, as sd-webui prepares them (modules/processing.py, masking.py),
on tensors: images (B, C, H, W) in [0, 1], masks (B or 1, 1, H, W) in [0, 1] with 1 = repaint.

Shared by every diffusion pipeline that inpaints with an ordinary model (the latent mask of
diffusion/inpainting.py): :func:`prepare_mask` (invert, Gaussian "Mask blur"), :func:`masked_start`
(the "Masked content" options and the latent-grid mask), :func:`overlay` (the original pasted back
outside the mask), :func:`nothing_to_repaint` (an all-black mask); and the pictures' side for the
CLI and the server (:func:`mask_from_picture`, :func:`pictures_to_batch`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from genpix.diffusion.inpainting import blend
from genpix.errors import GenpixError

# sd-webui's inpainting_fill values, by index ("Masked content")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
MAX_MASK_BLUR = 64  # sd-webui's slider range
FILL_RADII = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))  # masking.fill: (blur radius, repeats)


def check_inpainting(mask_blur: int, inpainting_fill: int) -> None:
    """One-line errors for the two settings, naming the allowed values."""
    if not 0 <= mask_blur <= MAX_MASK_BLUR or int(mask_blur) != mask_blur:
        raise GenpixError(f"mask blur must be a whole number of pixels from 0 to {MAX_MASK_BLUR}, got {mask_blur}")
    if inpainting_fill not in range(len(MASKED_CONTENT)):
        choices = ", ".join(f"{i} {name}" for i, name in enumerate(MASKED_CONTENT))
        raise GenpixError(f"inpainting fill must be one of {choices}; got {inpainting_fill!r}")


def gaussian_blur(x: torch.Tensor, sigma: float, *, zero_padding: bool = False) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with std ``sigma`` pixels over 2 int(2.5 sigma + 0.5) + 1
    taps (sd-webui's kernel for mask blur); edges replicated, or zeros (for normalised convolution).
    Wide blurs run on an area-downsampled copy (std at most 4 there) and are upsampled back."""
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    factor = int(sigma // 4)
    if factor > 1:
        small = F.interpolate(x, size=(-(-h // factor), -(-w // factor)), mode="area")
        small = gaussian_blur(small, sigma / factor, zero_padding=zero_padding)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    radius = int(2.5 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, -1)
    for dim in (-1, -2):  # along W, then along H
        weights = kernel[..., None, :] if dim == -1 else kernel[..., :, None]
        pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
        x = F.pad(x, pad, mode="constant" if zero_padding else "replicate")
        x = F.conv2d(x, weights, groups=x.shape[1])
    return x


def prepare_mask(mask: torch.Tensor, blur: int = 0, invert: bool = False) -> torch.Tensor:
    """A mask (B, 1, H, W) in [0, 1] as sd-webui applies it: inverted (inpainting_mask_invert: repaint
    the unmasked area), then blurred with std ``blur`` pixels (mask_blur) so the result fades into
    the original."""
    mask = mask.float().clamp(0, 1)
    mask = 1 - mask if invert else mask
    return gaussian_blur(mask, float(blur)).clamp(0, 1)


def nothing_to_repaint(mask: torch.Tensor) -> bool:
    """True, with a warning, when a prepared mask (after invert and blur) marks no pixel to repaint:
    every value below half an 8-bit step, where :func:`overlay` gives back the original exactly.
    The pipelines then return their init images unchanged instead of sampling (sd-webui would run
    the whole sampler and paste the original back over all of it)."""
    if float(mask.max()) >= 0.5 / 255:
        return False
    warnings.warn("the mask is all black (nothing to repaint): the image comes back unchanged; "
                  "white marks what to repaint", stacklevel=3)
    return True


def fill_masked(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sd-webui's "fill" (masking.fill): the masked area painted with ever sharper blurs of the
    pixels around it, composited radius 256, 64, 16, 4, 2, 0; the known pixels stay exact.
    Normalised convolution: the blur of the premultiplied known pixels over the blur of their weight."""
    weight = (1 - mask).expand(images.shape[0], 1, -1, -1)
    color, alpha = torch.zeros_like(images), torch.zeros_like(weight)
    for radius, repeats in FILL_RADII:
        num = gaussian_blur(images * weight, radius, zero_padding=True)
        den = gaussian_blur(weight, radius, zero_padding=True).clamp(0, 1)
        for _ in range(repeats):  # "over" compositing, premultiplied
            color, alpha = num + color * (1 - den), den + alpha * (1 - den)
    return torch.where(alpha > 1e-6, color / alpha.clamp_min(1e-6), images)


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The binary mask on the model's grid (h, w): a cell is regenerated when any of its pixels
    shows generated content after :func:`overlay` (mean mask >= 0.5/255), so a blurred mask fades
    into new content, and a mask smaller than a latent cell still repaints. (sd-webui rounds the
    mean instead, mask_round, which keeps a blur's outer half and small masks original.)"""
    return (F.interpolate(mask.float(), size=size, mode="area") >= 0.5 / 255).float()


def masked_start(init: torch.Tensor, mask: torch.Tensor, fill: int, encode: Callable[[torch.Tensor], torch.Tensor],
                 generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0, start, grid mask) for inpainting ``init`` (B, C, H, W) in [0, 1] under ``mask`` (1 or B, 1, H, W).

    x0 = encode(init), ``init`` painted by :func:`fill_masked` first with fill 0 ("fill"); the grid
    mask is :func:`latent_mask` on x0's grid; ``start`` is what gets noised to the first sigma:
    x0 (0 fill, 1 original), or inside the mask N(0, I) from each image's generator (2 latent
    noise) or zeros (3 latent nothing), as sd-webui's init_latent."""
    x0 = encode(fill_masked(init, mask) if fill == 0 else init)
    small = latent_mask(mask.to(x0.device), tuple(x0.shape[-2:]))
    if fill == 2:
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in generators]).to(x0.device)
        return x0, blend(noise, x0, small), small
    if fill == 3:
        return x0, blend(torch.zeros_like(x0), x0, small), small
    return x0, x0, small


def overlay(generated: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The original pasted over the result outside the (blurred) mask (sd-webui's overlay_images), so
    unmasked pixels come back as they went in, whatever the autoencoder does to them."""
    return blend(generated, original.to(generated.device), mask.to(generated.device))


def inpainting_params(mask_blur: int, inpainting_fill: int | None) -> dict[str, object]:
    """sd-webui's infotext entries for an inpainting run."""
    return {"Mask blur": mask_blur,
            "Masked content": None if inpainting_fill is None else MASKED_CONTENT[inpainting_fill]}


# --- pictures (the CLI's files, the API's base64) ----------------------------------------------------


def mask_from_picture(picture: Image.Image) -> Image.Image:
    """A mask picture as mode L, white = repaint: its alpha channel when it has transparency (an
    RGBA drawing, as sd-webui's create_binary_mask reads it), else its luma."""
    if picture.mode in ("RGBA", "LA") and picture.getchannel("A").getextrema()[0] < 255:
        return picture.getchannel("A")
    return picture.convert("L")


def pictures_to_batch(pictures: Sequence[Image.Image], size: tuple[int, int], channels: int,
                      crop: bool = False) -> torch.Tensor:
    """PIL pictures -> (B, C, H, W) float in [0, 1], each converted to ``channels`` and resized to
    ``size`` = (width, height) (first cropped to its aspect ratio with ``crop``)."""
    from genpix.data.transforms import crop_to_aspect_ratio, normalise_mode, pil_to_chw, to_pil_channels

    arrays = []
    for picture in pictures:
        picture = normalise_mode(picture)
        if crop:
            picture = crop_to_aspect_ratio(picture, size[0] / size[1])
        picture = to_pil_channels(picture, channels)
        if picture.size != tuple(size):
            picture = picture.resize(tuple(size), Image.Resampling.LANCZOS)
        arrays.append(pil_to_chw(picture))
    return torch.from_numpy(np.stack(arrays)).float() / 255
