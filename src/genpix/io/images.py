"""Tensors to pictures: PIL conversion, grids, PNGs with sd-webui infotext, GIFs, arrays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from genpix.io.atomic import write_atomic

INFOTEXT_KEY = "parameters"  # the PNG text chunk sd-webui writes and reads


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [0, 1] -> uint8 array (B, H, W, C)."""
    array = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) float in [0, 1] -> PIL images (mode L for C = 1, RGB for C = 3)."""
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in to_uint8(images)]


def make_grid(images: Sequence[Image.Image], columns: int | None = None, padding: int = 2,
              background: int = 0) -> Image.Image:
    """Tile equally sized images row by row; ``columns`` defaults to a near-square grid."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    mode = "RGB" if any(im.mode != "L" for im in images) else "L"
    grid = Image.new(mode, (columns * (w + padding) + padding, rows * (h + padding) + padding),
                     background)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid.paste(image.convert(mode), (padding + c * (w + padding), padding + r * (h + padding)))
    return grid


def format_infotext(params: dict[str, object], prompt: str = "", negative_prompt: str = "") -> str:
    """sd-webui's generation-parameters text: prompt, 'Negative prompt: ...', 'Key: value, ...'."""
    lines = [prompt] if prompt else []
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{k}: {v}" for k, v in params.items() if v is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, str]:
    """The 'Key: value' pairs of an infotext's last line (plus 'Prompt' / 'Negative prompt')."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    for part in lines[-1].split(", "):
        key, sep, value = part.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    body = lines[:-1]
    negative = [ln for ln in body if ln.startswith("Negative prompt: ")]
    if negative:
        fields["Negative prompt"] = negative[0][len("Negative prompt: "):]
    prompt = [ln for ln in body if not ln.startswith("Negative prompt: ")]
    if prompt:
        fields["Prompt"] = "\n".join(prompt)
    return fields


def save_png(image: Image.Image, path: str | Path, infotext: str | None = None) -> Path:
    """Write a PNG atomically, with ``infotext`` in its ``parameters`` text chunk."""
    meta = PngImagePlugin.PngInfo()
    if infotext:
        meta.add_text(INFOTEXT_KEY, infotext)
    return write_atomic(path, lambda p: image.save(p, format="PNG", pnginfo=meta))


def read_infotext(path: str | Path) -> str | None:
    with Image.open(path) as image:
        return image.info.get(INFOTEXT_KEY)


def save_gif(frames: Sequence[Image.Image], path: str | Path, duration_ms: int = 120) -> Path:
    """An animated GIF that plays forwards then backwards, looping."""
    sequence = list(frames) + list(frames[-2:0:-1])
    return write_atomic(path, lambda p: sequence[0].save(
        p, format="GIF", save_all=True, append_images=sequence[1:], duration=duration_ms, loop=0))


def save_npy(images: torch.Tensor, path: str | Path) -> Path:
    """uint8 array (N, H, W, C), written atomically."""
    array = to_uint8(images)

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array)

    return write_atomic(path, write)
