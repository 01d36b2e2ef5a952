"""``genpix export``: a model folder for sharing or bundling (chosen weights, half precision)."""

from __future__ import annotations

import argparse
import json


def register(commands) -> None:
    p = commands.add_parser("export", help="copy a model folder keeping chosen weights, optionally in float16",
                            description="Write a model folder with only the weights sampling needs (e.g. the "
                                        "EMA U-Net of a diffusion run), optionally cast to float16, with notes "
                                        "(recipe, hardware, quality) recorded in config.json.")
    p.add_argument("model", metavar="MODEL", help="a run or model folder")
    p.add_argument("out", metavar="OUT", help="the folder to write")
    p.add_argument("--roles", help="comma-separated weight roles to keep, e.g. ema (default: all)")
    p.add_argument("--fp16", action="store_true", help="store floating-point weights as float16")
    p.add_argument("--notes", metavar="JSON", help="a JSON object (or @FILE) merged into config.json's notes")
    p.add_argument("--steps", type=int, help="the model's default sampling steps (config.json sampling section; "
                                             "the family's default otherwise)")
    p.add_argument("--sampler", help="the model's default sampler, e.g. \"DPM++ 2M\"")
    p.add_argument("--cfg-scale", type=float, help="the model's default classifier-free guidance scale")
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from genpix.errors import GenpixError
    from genpix.io.checkpoint import WEIGHTS_NAME, export_model_dir

    notes = None
    if args.notes:
        text = Path(args.notes[1:]).read_text() if args.notes.startswith("@") else args.notes
        try:
            notes = json.loads(text)
        except json.JSONDecodeError as error:
            raise GenpixError(f"--notes is not valid JSON ({error})") from None
        if not isinstance(notes, dict):
            raise GenpixError("--notes must be a JSON object")
    roles = tuple(r for r in args.roles.split(",") if r) if args.roles else None
    out = export_model_dir(args.model, args.out, roles=roles, dtype=torch.float16 if args.fp16 else None,
                           notes=notes, sampling=_sampling(args))
    size = (out / WEIGHTS_NAME).stat().st_size / 2**20
    print(f"wrote {out} ({size:.2f} MiB of weights)")
    return 0


def _sampling(args: argparse.Namespace) -> dict | None:
    """--steps/--sampler/--cfg-scale as config.json's sampling section, checked as a pipeline will."""
    from genpix.pipelines.capabilities import checked_sampling

    section = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("cfg_scale", args.cfg_scale))
               if v is not None}
    return checked_sampling(section, "export") if section else None
