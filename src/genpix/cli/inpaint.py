"""``genpix inpaint IMAGE MASK PROMPT`` and ``genpix outpaint IMAGE PROMPT``: repaint part of a picture.

Any diffusion model inpaints: an SD inpainting checkpoint (9 input channels) with its own
conditioning, every other model with the latent mask (diffusion/inpainting.py). The picture keeps
its size: the model works at the picture's size rounded to 8 (Stable Diffusion) or at its one size
(pixel models, the picture resized), and the result is pasted back over the picture through the
blurred mask, so the unmasked pixels come back unchanged. For a class-conditional model PROMPT is a
class name, or empty for no class (as ``genpix sample --class``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genpix.cli.common import (add_device, add_loading, add_seed, finite_float, non_negative_int, safety_options,
                               sd_options)
from genpix.cli.generate import add_sampling
from genpix.pipelines.models import DEFAULT_TEXT_MODEL

OUTPAINT_STRENGTH = 0.8  # outpainting mk2's recommended denoising strength


def _add_options(p: argparse.ArgumentParser, strength_help: str) -> None:
    p.add_argument("--model", help="a diffusion model: folder, bundled name, or Stable Diffusion file "
                                   f"(default: the bundled {DEFAULT_TEXT_MODEL})")
    p.add_argument("--strength", type=finite_float, help=strength_help)
    p.add_argument("--mask-blur", type=non_negative_int, default=4,
                   help="Gaussian blur of the mask in pixels, 0..64: the repaint fades into the picture (default 4)")
    p.add_argument("--inpainting-fill", type=int, choices=range(4), default=1, metavar="0..3",
                   help="masked content before noising: 0 fill (blurred surroundings), 1 original (default), "
                        "2 latent noise, 3 latent nothing")
    add_sampling(p, n=1, steps_help="sampling steps before strength",
                 sampler_help="sampler name, e.g. 'Euler a' or 'DPM++ 2M Karras'",
                 cfg_help="classifier-free guidance scale")
    p.add_argument("--negative-prompt", help="negative prompt (text-conditioned models)")
    add_loading(p, "tokenizer folder for a single-file Stable Diffusion checkpoint")
    add_seed(p)
    add_device(p)


def register(commands) -> None:
    p = commands.add_parser("inpaint", help="repaint the white part of a mask",
                            description="Repaint the region of IMAGE that MASK marks white (or its alpha, for "
                                        "a transparent drawing) with a diffusion model; the rest stays as it was.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("mask", metavar="MASK", help="picture of the same size; white = repaint")
    p.add_argument("prompt", metavar="PROMPT", nargs="?", default="",
                   help="text prompt, or a class name for class-conditional models (default empty)")
    _add_options(p, "how far towards pure noise, 0..1 (default 0.75; 1 for SD inpainting models)")
    p.add_argument("--invert-mask", action="store_true", help="repaint the black part instead")
    p.set_defaults(run=run_inpaint)

    p = commands.add_parser("outpaint", help="extend a picture beyond its borders",
                            description="Grow the canvas of IMAGE by --left/--right/--up/--down pixels (the new "
                                        "border starts as the picture's stretched edges) and inpaint the border.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("prompt", metavar="PROMPT", nargs="?", default="",
                   help="text prompt, or a class name for class-conditional models (default empty)")
    for side, edge in (("left", "left"), ("right", "right"), ("up", "top"), ("down", "bottom")):
        p.add_argument(f"--{side}", type=non_negative_int, default=0, metavar="N",
                       help=f"pixels to add at the {edge} (default 0)")
    _add_options(p, f"how far towards pure noise, 0..1 (default {OUTPAINT_STRENGTH}, outpainting mk2's advice)")
    p.set_defaults(run=run_outpaint, invert_mask=False)


def _open(path: str):
    from PIL import Image, UnidentifiedImageError

    from genpix.errors import GenpixError

    if not Path(path).is_file():
        raise GenpixError(f"{path}: no such image file")
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.copy()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise GenpixError(f"{path}: not a readable image ({type(error).__name__})") from None


def _paint(args: argparse.Namespace, picture, mask, strength: float | None) -> int:
    """Inpaint ``picture`` (PIL) under ``mask`` (PIL L, white = repaint) and write the results."""
    from genpix.cli.generate import generation_request, run_pipeline, write_outputs
    from genpix.data.transforms import normalise_mode, to_pil_channels
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.pipelines import load_pipeline
    from genpix.pipelines.masking import pictures_to_batch
    from genpix.pipelines.outpaint import generation_size, paste_back
    from genpix.pipelines.output import PipelineOutput

    set_cpu_threads()
    pipe = load_pipeline(args.model or DEFAULT_TEXT_MODEL, device=resolve_device(args.device), **sd_options(args),
                         **safety_options(args))
    channels = pipe.capabilities.channels
    picture = to_pil_channels(normalise_mode(picture), channels)
    mask = mask if mask.size == picture.size else mask.resize(picture.size)
    width, height = size = generation_size(pipe, picture.size)
    request = generation_request(args, width=width, height=height,
                                 init_images=pictures_to_batch([picture], size, channels),
                                 mask=pictures_to_batch([mask], size, 1), mask_blur=args.mask_blur,
                                 inpainting_fill=args.inpainting_fill, invert_mask=args.invert_mask,
                                 **({} if strength is None else {"strength": strength}))
    out = run_pipeline(pipe, request)
    images = paste_back(out.images, picture, mask, args.mask_blur, args.invert_mask, out.info.get("nsfw"))
    write_outputs(PipelineOutput(images, pictures_to_batch(images, picture.size, channels), out.infotexts,
                                 out.info), args)
    return 0


def run_inpaint(args: argparse.Namespace) -> int:
    from genpix.pipelines.masking import mask_from_picture

    return _paint(args, _open(args.image), mask_from_picture(_open(args.mask)), args.strength)


def run_outpaint(args: argparse.Namespace) -> int:
    from genpix.data.transforms import normalise_mode
    from genpix.pipelines.outpaint import extend_canvas

    canvas, mask = extend_canvas(normalise_mode(_open(args.image)), args.left, args.right, args.up, args.down)
    return _paint(args, canvas, mask, OUTPAINT_STRENGTH if args.strength is None else args.strength)
