"""Quality per step budget of each sampler on one model: the fast-sampling corner of the trilemma.

For each sampler and step count, ``-n`` unconditional images (seeds 0..n-1, the same starting
noise for every row) are compared with ``--real`` test images by the Fréchet distance on domain
features (`genpix eval train-features`), and with the images of a ``--reference-steps`` ancestral
DDPM run from the same noise (mean absolute pixel difference is not meaningful for stochastic
samplers, so only the distribution is compared). Prints a Markdown table. Usage:

    GENPIX_THREADS=1 python benchmarks/sampler_quality.py fashion-ddpm -n 500 --steps 5 10 20 50 \
        --sampler Euler "Euler a" DDIM "DPM++ 2M" UniPC Heun --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import genpix
from genpix.device import set_cpu_threads
from genpix.eval.features import extract, load_extractor
from genpix.eval.inputs import load_image_set
from genpix.metrics.frechet import feature_statistics, frechet_distance_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--real", default="fashion-mnist:test")
    parser.add_argument("--data", default="fashion-mnist", help="dataset of the domain feature network")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--sampler", nargs="+", default=["Euler", "Euler a", "DDIM", "DPM++ 2M", "UniPC"])
    parser.add_argument("--reference-steps", type=int, default=1000, help="0: no reference row")
    parser.add_argument("--json")
    args = parser.parse_args()
    set_cpu_threads()
    pipe = genpix.load_pipeline(args.model)
    extractor = load_extractor("domain", dataset=args.data)
    channels, size = extractor.channels, extractor.image_size
    real = load_image_set(args.real, limit=max(args.n, 1000))
    real_stats = feature_statistics(extract(extractor, real.images, channels, size).features)

    def row(sampler: str, steps: int) -> dict:
        tic = time.perf_counter()
        out = pipe(n=args.n, seed=0, steps=steps, sampler=sampler)
        seconds = time.perf_counter() - tic
        stats = feature_statistics(extract(extractor, out.tensors, channels, size).features)
        return {"sampler": sampler, "steps": steps, "fd": frechet_distance_stats(real_stats, stats),
                "ms_per_image": 1000 * seconds / args.n}

    reference = row("DDPM", args.reference_steps) if args.reference_steps > 0 else None
    rows = [row(sampler, steps) for sampler in args.sampler for steps in args.steps]
    print(f"Fréchet distance on domain features to {len(real.images)} real test images; "
          f"{args.n} unconditional samples each (seeds 0..{args.n - 1})")
    if reference:
        print(f"reference: DDPM {args.reference_steps} steps = {reference['fd']:.2f} "
              f"({reference['ms_per_image']:.0f} ms/image)")
    print()
    print("| sampler | " + " | ".join(f"{s} steps" for s in args.steps) + " |")
    print("|---|" + "---|" * len(args.steps))
    for sampler in args.sampler:
        cells = [r for r in rows if r["sampler"] == sampler]
        print(f"| {sampler} | " + " | ".join(f"{r['fd']:.2f} ({r['ms_per_image']:.0f} ms)" for r in cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reference": reference, "rows": rows, "n": args.n, "real": args.real}, f, indent=2)


if __name__ == "__main__":
    main()
