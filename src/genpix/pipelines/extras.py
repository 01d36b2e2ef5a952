"""sd-webui's Extras upscale (``scripts/postprocessing_upscale.py``, ``modules/postprocessing.py``).

Resize mode 0 upscales by ``scale``; mode 1 by ``max(width / w, height / h)`` and, with ``crop``,
pastes the result centred on a ``width`` x ``height`` canvas. A second upscaler, when given with a
visibility above 0, runs on the same input and is blended in (``Image.blend``). Main upscaler
``None`` leaves the picture as it is. The infotext (``Postprocess upscale by: 4, Postprocess
upscaler: NAME, ...``) goes into the PNG's ``postprocessing`` text chunk; the input's own text chunks
(its generation ``parameters``) are kept.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Literal

from PIL import Image, PngImagePlugin

from genpix.config import check
from genpix.pipelines.upscale import MAX_OUTPUT_PIXELS, MAX_SCALE, upscale_image
from genpix.pipelines.upscalers import UpscalerRegistry

POSTPROCESSING_KEY = "postprocessing"


@dataclass(frozen=True)
class ExtrasConfig:
    upscaler_1: str = "None"  # main upscaler name ("None": no upscale)
    upscaler_2: str = "None"  # secondary upscaler, blended in with upscaler_2_visibility
    upscaler_2_visibility: float = 0.0  # 0..1
    resize_mode: Literal[0, 1] = 0  # 0: by scale; 1: to width x height
    scale: float = 2.0  # "Scale by", 1..8 in sd-webui's API
    width: int = 512  # "Scale to" target (resize_mode 1)
    height: int = 512
    crop: bool = True  # resize_mode 1: crop to exactly width x height

    def __post_init__(self) -> None:
        check(1 <= self.scale <= MAX_SCALE, f"upscale factor must be between 1 and {MAX_SCALE:g}, got {self.scale:g}")
        check(0 <= self.upscaler_2_visibility <= 1,
              f"upscaler 2 visibility must be between 0 and 1, got {self.upscaler_2_visibility:g}")
        check(self.width >= 1 and self.height >= 1, f"target size must be positive, got {self.width}x{self.height}")
        check(self.width * self.height <= MAX_OUTPUT_PIXELS,
              f"target size {self.width}x{self.height} is over the limit of {MAX_OUTPUT_PIXELS} pixels")
        check(self.resize_mode in (0, 1), f"resize mode must be 0 (scale by) or 1 (scale to), got {self.resize_mode}")


def _factor(image: Image.Image, config: ExtrasConfig) -> float:
    if config.resize_mode == 1:
        return max(config.width / image.width, config.height / image.height)
    return config.scale


def _upscale(image: Image.Image, name: str, registry: UpscalerRegistry, config: ExtrasConfig) -> Image.Image:
    factor = _factor(image, config)
    if factor >= 1:
        out = upscale_image(image, registry.get(name), scale=factor)
    else:  # "Scale to" a smaller size: Lanczos down, as sd-webui's upscaler does below 1x
        out = image.resize((max(1, int(image.width * factor)), max(1, int(image.height * factor))),
                           Image.Resampling.LANCZOS)
    if config.resize_mode == 1 and config.crop:  # centred on the target canvas, as sd-webui pastes it
        canvas = Image.new(out.mode, (config.width, config.height))
        canvas.paste(out, (config.width // 2 - out.width // 2, config.height // 2 - out.height // 2))
        out = canvas
    return out


def run_extras(image: Image.Image, registry: UpscalerRegistry, config: ExtrasConfig) -> tuple[Image.Image, str]:
    """(upscaled picture carrying its text chunks, infotext); unknown names raise before any work."""
    names = [config.upscaler_1] + ([config.upscaler_2] if config.upscaler_2 != "None" else [])
    for name in names:
        registry.find(name)
    source = image.convert("RGB") if image.mode not in ("RGB", "L") else image
    if config.upscaler_1 == "None":
        return _with_text(source, image, ""), ""
    info: dict[str, str] = {}
    if config.resize_mode == 1:
        info["Postprocess upscale to"] = f"{config.width}x{config.height}"
    else:
        info["Postprocess upscale by"] = f"{config.scale:g}"
    out = _upscale(source, config.upscaler_1, registry, config)
    if config.resize_mode == 1 and config.crop:
        info["Postprocess crop to"] = f"{out.width}x{out.height}"
    info["Postprocess upscaler"] = config.upscaler_1
    if len(names) > 1 and config.upscaler_2_visibility > 0:
        second = _upscale(source, config.upscaler_2, registry, config)
        second = second.convert(out.mode).resize(out.size) if second.size != out.size else second.convert(out.mode)
        out = Image.blend(out, second, config.upscaler_2_visibility)
        info["Postprocess upscaler 2"] = config.upscaler_2
    infotext = ", ".join(f"{k}: {v}" for k, v in info.items())
    return _with_text(out, image, infotext), infotext


def _with_text(out: Image.Image, original: Image.Image, infotext: str) -> Image.Image:
    out = out.copy() if out is original else out
    out.info = {k: v for k, v in original.info.items() if isinstance(k, str) and isinstance(v, str)}
    if infotext:
        out.info[POSTPROCESSING_KEY] = infotext
    return out


def png_info(image: Image.Image) -> PngImagePlugin.PngInfo:
    """The picture's text chunks (``parameters``, ``postprocessing``, ...) for ``Image.save``."""
    meta = PngImagePlugin.PngInfo()
    for key, value in image.info.items():
        if isinstance(key, str) and isinstance(value, str):
            meta.add_text(key, value)
    return meta


def html_info(infotext: str) -> str:
    """sd-webui's ``plaintext_to_html``: escaped lines joined by <br>, in a <p>."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in infotext.split("\n")) + "</p>"


__all__ = ["ExtrasConfig", "POSTPROCESSING_KEY", "html_info", "png_info", "run_extras"]
