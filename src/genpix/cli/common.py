"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse

from genpix.arguments import finite_float, positive_int  # noqa: F401 (the CLI modules import them from here)
from genpix.errors import GenpixError


def non_negative_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


SEED_LIMIT = 2**63  # seeds are signed 64-bit integers (torch.Generator, numpy); image i uses seed + i


def seed_int(text: str) -> int:
    """A --seed: a whole number of at most 64 bits (signed), checked here rather than as torch's
    'Overflow when unpacking long' traceback."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    low, high = -SEED_LIMIT, SEED_LIMIT - 2**20 - 1  # room for seed + i over a large batch
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be a 64-bit seed from {low} to {high}, got {text}")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run (default: CUDA when present, else the CPU)")


def add_seed(parser: argparse.ArgumentParser, default: int | None = 0) -> None:
    parser.add_argument("--seed", type=seed_int, default=default,
                        help=f"random seed (default {default}); image i uses seed + i")


def add_loading(parser: argparse.ArgumentParser, tokenizer_help: str) -> None:
    """--tokenizer and --half (Stable Diffusion models), then the safety flags of :func:`add_safety`."""
    parser.add_argument("--tokenizer", help=tokenizer_help)
    parser.add_argument("--half", action="store_true",
                        help="Stable Diffusion on CUDA: the U-Net and text encoder in float16 (the autoencoder "
                             "stays float32)")
    parser.add_argument("--lora", action="append", metavar="PATH[:WEIGHT]",
                        help="Stable Diffusion: apply this LoRA file (or a name in --lora-dir) to every prompt, "
                             "weight 1 by default; repeatable. Prompts may also hold <lora:NAME:WEIGHT>")
    parser.add_argument("--lora-dir", help="folder of LoRA files named in <lora:NAME:...> (default models/Lora)")
    parser.add_argument("--embeddings-dir", help="folder of textual-inversion embeddings (default embeddings)")
    add_safety(parser)


def sd_options(args: argparse.Namespace) -> dict:
    """load_pipeline's Stable Diffusion options for the flags of :func:`add_loading` (none for the defaults)."""
    given = (("tokenizer", args.tokenizer), ("half", args.half or None), ("loras", tuple(args.lora or ()) or None),
             ("lora_dir", args.lora_dir), ("embeddings_dir", args.embeddings_dir))
    return {k: v for k, v in given if v is not None}


def add_safety(parser: argparse.ArgumentParser) -> None:
    """--no-safety-checker and --blocklist: the safety checks of text-to-image models (pipelines/safety.py)."""
    parser.add_argument("--no-safety-checker", dest="safety_checker", action="store_false",
                        help="text-to-image models: run no safety check, neither the prompt blocklist nor a "
                             "Stable Diffusion folder's safety checker (each makes the images it flags black)")
    parser.add_argument("--blocklist", metavar="FILE",
                        help="more terms for the prompt blocklist, one a line ('#' comments), besides its "
                             "defaults and those of the file $GENPIX_BLOCKLIST names")


def safety_options(args: argparse.Namespace) -> dict:
    """load_pipeline's options for the flags of :func:`add_safety` (none for the defaults)."""
    options = {} if args.safety_checker else {"safety_checker": False}
    return options if args.blocklist is None else {**options, "blocklist": args.blocklist}


def need(condition: bool, message: str) -> None:
    if not condition:
        raise GenpixError(message)
