"""``genpix upscale IMAGE... --upscaler NAME --scale 4 [-o OUT]``: sd-webui's Extras upscale."""

from __future__ import annotations

import argparse
from pathlib import Path

from genpix.cli.common import add_device, finite_float, need, non_negative_int, positive_int

DEFAULT_OUT = "outputs/extras-images"  # sd-webui's outdir_extras_samples


def register(commands) -> None:
    p = commands.add_parser("upscale", help="upscale pictures with ESRGAN-type models or Lanczos (sd-webui's Extras)",
                            description="Upscale pictures as sd-webui's Extras tab does; the PNGs keep their "
                                        "generation parameters and gain a 'postprocessing' infotext.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--upscaler", default="Lanczos",
                   help="None, Lanczos, Nearest, or an upscaler file's name without its suffix in "
                        "--upscalers-dir (default Lanczos); `--list` shows them")
    p.add_argument("--scale", type=finite_float, default=4.0, help="upscale factor, 1..8 (default 4)")
    p.add_argument("--width", type=positive_int, help="upscale to this width instead (with --height)")
    p.add_argument("--height", type=positive_int, help="upscale to this height instead (with --width)")
    p.add_argument("--no-crop", dest="crop", action="store_false",
                   help="with --width/--height: keep the aspect ratio instead of cropping to the size")
    p.add_argument("--upscaler-2", default="None", help="second upscaler blended in (default None)")
    p.add_argument("--upscaler-2-visibility", type=finite_float, default=0.0, help="its weight, 0..1")
    p.add_argument("--upscalers-dir", default="models/ESRGAN",
                   help="folder of upscaler files (.pth, .safetensors), searched recursively (default models/ESRGAN)")
    p.add_argument("--tile", type=non_negative_int, default=192,
                   help="tile size in input pixels for model upscalers, 0 = whole picture (default 192)")
    p.add_argument("--tile-overlap", type=non_negative_int, default=8, help="tile overlap in pixels (default 8)")
    p.add_argument("-o", "--out", help=f"folder for the PNGs, or a .png name for one picture (default {DEFAULT_OUT})")
    p.add_argument("--list", action="store_true", help="list the upscalers (name, architecture, scale) and exit")
    add_device(p)
    p.set_defaults(run=run_upscale)


def _out_path(args: argparse.Namespace, source: Path) -> Path:
    out = Path(args.out or DEFAULT_OUT)
    if out.suffix.lower() == ".png":
        need(len(args.images) == 1, f"-o {out} names one file; give a folder for {len(args.images)} pictures")
        return out
    return out / f"{source.stem}.png"


def run_upscale(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from genpix.device import resolve_device
    from genpix.io.atomic import write_atomic
    from genpix.pipelines.extras import ExtrasConfig, png_info, run_extras
    from genpix.pipelines.tiling import TileConfig
    from genpix.pipelines.upscalers import UpscalerRegistry

    registry = UpscalerRegistry(args.upscalers_dir, tile=TileConfig(args.tile, args.tile_overlap),
                                device=resolve_device(args.device))
    if args.list:
        for entry in registry.entries():
            print(f"{entry.name}\t{entry.spec.architecture if entry.spec else 'plain'}\tx{entry.scale}")
        return 0
    need((args.width is None) == (args.height is None), "give both --width and --height, or neither")
    config = ExtrasConfig(upscaler_1=args.upscaler, upscaler_2=args.upscaler_2,
                          upscaler_2_visibility=args.upscaler_2_visibility, scale=args.scale,
                          resize_mode=0 if args.width is None else 1, width=args.width or 512,
                          height=args.height or 512, crop=args.crop)
    for name in (args.upscaler, args.upscaler_2):
        registry.find(name)  # an unknown name fails before any picture is read
    for text in args.images:
        source = Path(text)
        try:
            with Image.open(source) as opened:
                opened.load()
                image = opened
        except (FileNotFoundError, IsADirectoryError):
            need(False, f"{source}: no such picture")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            need(False, f"{source} is not a readable picture ({type(error).__name__})")
        out, infotext = run_extras(image, registry, config)
        path = _out_path(args, source)
        need(path.resolve() != source.resolve(), f"{path} would overwrite its input; choose another -o")
        write_atomic(path, lambda p, out=out: out.save(p, format="PNG", pnginfo=png_info(out)))
        print(f"{path} {out.width}x{out.height} {infotext}".rstrip())
    return 0
