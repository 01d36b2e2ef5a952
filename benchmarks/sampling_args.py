"""The command-line arguments the sampling benchmarks share (a model, images, sampler settings, --json)."""

from __future__ import annotations

import argparse
import json


def sampling_parser(description: str, *, n: int, n_help: str, cfg_scale: float) -> argparse.ArgumentParser:
    """A parser with MODEL, -n, --steps, --sampler, --cfg-scale and --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model")
    parser.add_argument("-n", type=int, default=n, help=n_help)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--cfg-scale", type=float, default=cfg_scale)
    parser.add_argument("--json", help="also write the result here")
    return parser


def write_json(result: dict, path: str | None) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
