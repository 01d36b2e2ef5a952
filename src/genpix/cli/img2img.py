"""``genpix img2img``: noise a real image part of the way and denoise it back (SDEdit)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genpix.cli.common import add_device, add_loading, add_seed, finite_float, positive_int, safety_options, sd_options


def register(commands) -> None:
    p = commands.add_parser(
        "img2img", help="re-generate an image from a noised copy (SDEdit)",
        description="Noise IMAGE to the level --strength and denoise it with a diffusion model. "
                    "Forms: `genpix img2img MODEL IMAGE` or `genpix img2img IMAGE [PROMPT] [--model MODEL]` (default: "
                    "the bundled text-to-image model).")
    p.add_argument("first", metavar="MODEL|IMAGE")
    p.add_argument("second", metavar="IMAGE|PROMPT", nargs="?")
    p.add_argument("--model", help="model folder, bundled name or Stable Diffusion file (with the IMAGE [PROMPT] "
                                   "form; default: the bundled text-to-image model)")
    p.add_argument("--strength", type=finite_float, default=0.6,
                   help="how far towards pure noise, 0..1 (default 0.6; 0 returns the image)")
    p.add_argument("-n", "--num-images", type=positive_int, default=1)
    p.add_argument("-o", "--out", help="folder for the PNGs (default: outputs, unless --npy/--grid)")
    p.add_argument("--npy")
    p.add_argument("--grid")
    p.add_argument("--steps", type=positive_int, help="sampling steps before strength (default 50)")
    p.add_argument("--sampler")
    p.add_argument("--cfg-scale", type=finite_float)
    p.add_argument("--class", dest="class_name")
    p.add_argument("--negative-prompt")
    add_loading(p, "tokenizer folder for a single-file Stable Diffusion checkpoint")
    p.add_argument("--trajectory", help="also write the denoising strip of the first image")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_img2img)


def _split_arguments(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(model, image, prompt) from either form."""
    from genpix.errors import GenpixError
    from genpix.io.sd_loader import is_sd_model
    from genpix.pipelines.models import DEFAULT_TEXT_MODEL, bundled_models

    first = args.first
    is_model = first in bundled_models() or Path(first, "config.json").is_file() or is_sd_model(first)
    if is_model and args.model is None:
        if args.second is None:
            raise GenpixError("img2img MODEL IMAGE: the image is missing")
        return first, args.second, None
    return args.model or DEFAULT_TEXT_MODEL, first, args.second


def run_img2img(args: argparse.Namespace) -> int:
    import torch

    from genpix.cli.generate import generation_request, run_pipeline, write_outputs
    from genpix.data import load_image_file
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.pipelines import load_pipeline

    set_cpu_threads()
    model, image_path, prompt = _split_arguments(args)
    pipe = load_pipeline(model, device=resolve_device(args.device), **sd_options(args), **safety_options(args))
    channels, size, _ = pipe.image_shape
    image = load_image_file(image_path, image_size=size, channels=channels)  # cropped, resized, converted
    args.prompt = prompt
    init = torch.from_numpy(image.copy())[None].float() / 255  # (a read-only array: torch would warn)
    out = run_pipeline(pipe, generation_request(args, init_images=init, strength=args.strength), args.trajectory)
    write_outputs(out, args)
    return 0
