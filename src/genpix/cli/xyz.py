"""``genpix xyz PROMPT --x-type Steps --x-values 10,20 ...``: sd-webui's X/Y/Z plot from the command line.

Each axis is one of sd-webui's types with its value syntax (pipelines/xyz_grid.py: ``1-5``, ``1-5 (+2)``,
``1-3 [3]``, CSV lists); every cell is one generation of the base request with the cell's overrides, and the
labelled grid is written to ``-o`` (the cells' pictures too with ``--cells DIR``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genpix.cli.common import add_device, add_loading, add_seed, need, positive_int, safety_options, sd_options
from genpix.cli.generate import add_sampler_options
from genpix.pipelines.models import DEFAULT_TEXT_MODEL

# sd-webui request fields an axis sets -> genpix request fields
FIELDS = {"sampler_name": "sampler", "scheduler": "schedule", "denoising_strength": "strength"}
SETTINGS = {"CLIP_stop_at_last_layers": "clip_skip"}
CELL_MIN_SIDE = 128  # cells of small models are enlarged (nearest) to at least this before the grid is drawn


def register(commands) -> None:
    p = commands.add_parser("xyz", help="an X/Y/Z plot: a grid over sampler, steps, CFG, seed, prompt S/R, ...",
                            description="sd-webui's X/Y/Z plot: one picture per combination of axis values, "
                                        "drawn as a labelled grid.")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--model", help=f"model (default {DEFAULT_TEXT_MODEL}); a Checkpoint name axis names others")
    p.add_argument("--negative-prompt", default="")
    for axis in "xyz":
        p.add_argument(f"--{axis}-type", default="Nothing",
                       help="Seed, Var. seed, Var. strength, Steps, CFG Scale, Prompt S/R, Sampler, "
                            "Checkpoint name, Schedule type, Eta, Clip skip, Denoising" if axis == "x" else None)
        p.add_argument(f"--{axis}-values", default="", help="e.g. '10-30 (+10)' or 'Euler a, DPM++ 2M'"
                       if axis == "x" else None)
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--sampler")
    add_sampler_options(p)
    p.add_argument("--cfg-scale", type=float)
    p.add_argument("--width", type=positive_int)
    p.add_argument("--height", type=positive_int)
    p.add_argument("--no-legend", action="store_true", help="draw no axis labels")
    p.add_argument("-o", "--out", default="xyz_grid.png", help="the grid picture (default xyz_grid.png)")
    p.add_argument("--cells", help="also write each cell's picture (with its infotext) to this folder")
    add_loading(p, "tokenizer folder for a single-file Stable Diffusion checkpoint")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_xyz)


def cell_request(base: dict, overrides: dict) -> tuple[str | None, dict]:
    """(checkpoint or None, genpix request fields) for one cell's sd-webui overrides."""
    fields = dict(base)
    settings = overrides.get("override_settings", {})
    for key, value in overrides.items():
        if key != "override_settings":
            fields[FIELDS.get(key, key)] = value
    for key, value in settings.items():
        if key in SETTINGS:
            fields[SETTINGS[key]] = value
    return settings.get("sd_model_checkpoint"), fields


def run_xyz(args: argparse.Namespace) -> int:
    from genpix.cli.generate import readable, run_pipeline
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.io.images import save_png
    from genpix.pipelines import load_pipeline
    from genpix.pipelines.request import GenerationRequest
    from genpix.pipelines.xyz_grid import parse_axis, plot

    set_cpu_threads()
    device = resolve_device(args.device)
    loaded: dict[str, object] = {}
    default = args.model or DEFAULT_TEXT_MODEL

    def pipeline(name: str | None):
        name = name or default
        if name not in loaded:
            loaded[name] = load_pipeline(name, device=device, **sd_options(args), **safety_options(args))
        return loaded[name]

    axes = [parse_axis(getattr(args, f"{a}_type"), getattr(args, f"{a}_values"), prompt=args.prompt,
                       negative_prompt=args.negative_prompt) for a in "xyz"]
    base = {k: v for k, v in (("prompt", args.prompt), ("negative_prompt", args.negative_prompt), ("seed", args.seed),
                              ("steps", args.steps), ("sampler", args.sampler), ("schedule", args.schedule),
                              ("cfg_scale", args.cfg_scale), ("eta", args.eta), ("s_churn", args.s_churn),
                              ("s_noise", args.s_noise), ("width", args.width), ("height", args.height))
            if v is not None}
    made: dict[int, tuple] = {}  # id(cell picture) -> (native picture, infotext); cells run costliest axis first

    def generate(overrides: dict):
        checkpoint, fields = cell_request(base, overrides)
        out = run_pipeline(pipeline(checkpoint), GenerationRequest.of(**fields))
        picture = readable(out.images[0], CELL_MIN_SIDE)  # small pictures enlarged before the labels are drawn
        made[id(picture)] = (out.images[0], out.infotexts[0])
        return picture

    need(args.x_type.strip().lower() != "nothing", "give the X axis: --x-type TYPE --x-values VALUES")
    result = plot(generate, *axes, draw_legend=not args.no_legend)
    save_png(result.grid, args.out, made[id(result.images[0])][1])
    if args.cells:
        Path(args.cells).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(result.images):
            native, text = made[id(image)]
            save_png(native, Path(args.cells) / f"{i:05d}.png", text)
    print(f"wrote the {len(result.images)}-cell X/Y/Z grid to {args.out}")
    return 0
