"""img2img scripts by sd-webui's names and ``script_args``: outpainting.

``/sdapi/v1/img2img`` with ``script_name`` "Poor man's outpainting" or "Outpainting mk2" (any case)
and sd-webui's argument lists (scripts/poor_mans_outpainting.py, scripts/outpainting_mk_2.py):

    poor man's outpainting: [pixels=128, mask_blur=4, inpainting_fill=0, direction=[left, right, up, down]]
    outpainting mk2:        [info (ignored), pixels=128, mask_blur=8, direction=[...], noise_q, color_variation]

Missing arguments take those defaults. Both run genpix's one outpainting (pipelines/outpaint.py):
``init_images[0]`` grows by ``pixels`` on each named side, the border starts as the stretched edge
(mk2's matched noise and its noise_q/color_variation are not implemented; mk2 runs with masked
content "original", i.e. the stretched edge, as mk2 runs with its noise), the border is inpainted
with ``mask_blur`` as given and the request's other fields, and the picture is pasted back: the
answer is the larger canvas, whose middle is the sent picture wherever the blurred mask is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from genpix.data.transforms import normalise_mode, to_pil_channels
from genpix.pipelines.outpaint import DIRECTIONS, MAX_EXTEND, extend_canvas, generation_size, paste_back
from genpix.server.errors import ApiError
from genpix.server.schemas import Img2ImgRequest

POOR_MANS, MK2 = "poor man's outpainting", "outpainting mk2"
IMG2IMG_SCRIPTS = [MK2, POOR_MANS]  # as /sdapi/v1/scripts lists them (lower case)


@dataclass(frozen=True)
class Outpainting:
    pixels: int
    mask_blur: int
    inpainting_fill: int
    directions: tuple[str, ...]

    def prepare(self, pipe, channels: int, request: Img2ImgRequest,
                init: list[Image.Image]) -> tuple[Img2ImgRequest, Image.Image, Image.Image]:
        """(the request to run, the canvas, its mask) for the first init image."""
        picture = to_pil_channels(normalise_mode(init[0]), channels)
        canvas, mask = extend_canvas(picture, **{d: self.pixels if d in self.directions else 0 for d in DIRECTIONS})
        width, height = generation_size(pipe, canvas.size)
        run = request.model_copy(update={"width": width, "height": height, "mask_blur": self.mask_blur,
                                         "inpainting_fill": self.inpainting_fill, "inpainting_mask_invert": 0,
                                         "resize_mode": 0})
        return run, canvas, mask

    def finish(self, images: list[Image.Image], canvas: Image.Image, mask: Image.Image,
               nsfw: list[bool] | None = None) -> list[Image.Image]:
        """The results pasted over the canvas; those the safety checks flagged stay black."""
        return paste_back(images, canvas, mask, self.mask_blur, nsfw=nsfw)


def _int(args: list[Any], index: int, default: int, name: str, low: int, high: int) -> int:
    value = args[index] if len(args) > index and args[index] is not None else default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or \
            not low <= value <= high:
        raise ApiError(f"script_args[{index}] ({name}) must be a whole number from {low} to {high}, got {value!r}", 422)
    return int(value)


def _directions(args: list[Any], index: int) -> tuple[str, ...]:
    value = args[index] if len(args) > index and args[index] is not None else list(DIRECTIONS)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or any(str(d).lower() not in DIRECTIONS for d in value):
        raise ApiError(f"script_args[{index}] (direction) must be a non-empty list of {', '.join(DIRECTIONS)}; "
                       f"got {value!r}", 422)
    return tuple(str(d).lower() for d in value)


def find_script(request, kind: str) -> Outpainting | None:
    """The request's script, or None without one; an unknown name is a 422 listing the scripts."""
    name = (request.script_name or "").strip()
    if not name:
        return None
    key = name.casefold()
    if kind != "img2img" or key not in IMG2IMG_SCRIPTS:
        raise ApiError(f"script {name!r} not found for {kind}; this server's img2img scripts: "
                       f"{', '.join(IMG2IMG_SCRIPTS)}", 422)
    args = list(getattr(request, "script_args", None) or [])
    if key == POOR_MANS:
        return Outpainting(_int(args, 0, 128, "pixels", 1, MAX_EXTEND), _int(args, 1, 4, "mask_blur", 0, 64),
                           _int(args, 2, 0, "inpainting_fill", 0, 3), _directions(args, 3))
    return Outpainting(_int(args, 1, 128, "pixels", 1, MAX_EXTEND), _int(args, 2, 8, "mask_blur", 0, 64), 1,
                       _directions(args, 3))
