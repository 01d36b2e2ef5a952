"""Prompt fidelity of a text-to-image model trained on `shapes`: does the picture show what the prompt says?

Every (shape, colour, position) caption of the shapes dataset (3 x 6 x 5 = 90 prompts) is generated
``-n`` times; `describe_shapes_image` reads back the brightest blob's shape, colour and position, and
the script prints the share of images where each attribute, and all three, match the prompt. Usage:

    GENPIX_THREADS=2 python benchmarks/prompt_fidelity.py shapes-ldm -n 2 --steps 20 --sampler "DPM++ 2M" \
        --cfg-scale 5 [--json out.json]
"""

from __future__ import annotations

import itertools
import time

import numpy as np
from sampling_args import sampling_parser, write_json

import genpix
from genpix.data.synthetic import COLOURS, POSITIONS, SHAPES, describe_shapes_image, shapes_caption
from genpix.device import set_cpu_threads


def prompt_fidelity(model: str, n: int, **options) -> dict:
    pipe = genpix.load_pipeline(model)
    hits = {"shape": 0, "colour": 0, "position": 0, "all": 0}
    total, seconds = 0, 0.0
    for k, (shape, colour, position) in enumerate(itertools.product(SHAPES, COLOURS, POSITIONS)):
        prompt = shapes_caption(shape, colour, position)
        tic = time.perf_counter()
        out = pipe(prompt=prompt, n=n, seed=100 * k, **options)
        seconds += time.perf_counter() - tic
        for image in out.images:
            seen = describe_shapes_image(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
            total += 1
            if seen is None:
                continue
            matches = dict(zip(("shape", "colour", "position"), (a == b for a, b in zip(seen, (shape, colour, position)))))
            for key, ok in matches.items():
                hits[key] += ok
            hits["all"] += all(matches.values())
    return {"model": model, "images": total, "options": options, "ms_per_image": 1000 * seconds / total,
            **{key: value / total for key, value in hits.items()}}


def main() -> None:
    args = sampling_parser(__doc__.splitlines()[0], n=2, n_help="images per prompt (90 prompts)",
                           cfg_scale=5.0).parse_args()
    set_cpu_threads()
    result = prompt_fidelity(args.model, args.n, steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale)
    print(f"{args.model}: {result['images']} images ({args.sampler}, {args.steps} steps, CFG {args.cfg_scale}), "
          f"{result['ms_per_image']:.0f} ms/image; prompt matched: shape {result['shape']:.2f}, colour "
          f"{result['colour']:.2f}, position {result['position']:.2f}, all three {result['all']:.2f}")
    write_json(result, args.json)


if __name__ == "__main__":
    main()
