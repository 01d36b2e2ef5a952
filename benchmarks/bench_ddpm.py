"""Pixel-space diffusion throughput: now ``genpix bench --family ddpm --sampler DDIM`` (genpix/eval/bench.py).

This script keeps its old options and runs that command:

    GENPIX_THREADS=1 python benchmarks/bench_ddpm.py --preset tiny --image-size 28 --batch 64 --train-steps 4 \\
        --sample-n 16 --steps 50
    # is the same as
    genpix bench --family ddpm --sampler DDIM --preset tiny --image-size 28 --batch-size 64 --train-steps 4 \
        -n 16 --steps 50
"""

from __future__ import annotations

import argparse
import sys

from genpix.cli import main as genpix


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image-size", default="28")
    p.add_argument("--batch", default="64")
    p.add_argument("--train-steps", default="5")
    p.add_argument("--sample-n", default="16")
    p.add_argument("--steps", default="50")
    p.add_argument("--repeats", default="3")
    p.add_argument("--no-diffusers", action="store_true")
    p.add_argument("--json", help="also write the figures to this JSON file")
    a = p.parse_args()
    argv = ["bench", "--family", "ddpm", "--sampler", "DDIM", "--preset", a.preset, "--image-size", a.image_size,
            "--batch-size", a.batch, "--train-steps", a.train_steps, "-n", a.sample_n, "--steps", a.steps,
            "--repeats", a.repeats, *(["--no-diffusers"] if a.no_diffusers else []),
            *(["--json", a.json] if a.json else [])]
    return genpix(argv)


if __name__ == "__main__":
    sys.exit(main())
