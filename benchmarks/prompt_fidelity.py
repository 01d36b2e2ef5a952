"""Prompt fidelity of a text-to-image model trained on `shapes` or `shape-scenes`, read from the pixels.

Does the picture show what the prompt says?
Every caption of the dataset is generated ``-n`` times and read back from the pixels:

- ``--data shapes`` (default): the 3 x 6 x 5 = 90 (shape, colour, position) captions;
  `describe_shapes_image` reads the brightest blob's shape, colour and position;
- ``--data shape-scenes``: the 360 (count, size, shape, colour, position) captions; `describe_scene`
  reads all five.

The script prints the share of images where each attribute, and all of them, match the prompt. Usage:

    GENPIX_THREADS=2 python benchmarks/prompt_fidelity.py shapes-ldm -n 2 --steps 20 --sampler "DPM++ 2M" \\
        --cfg-scale 5 [--data shape-scenes] [--json out.json]
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np
from sampling_args import sampling_parser, write_json

import genpix
from genpix.data import scenes
from genpix.data.synthetic import COLOURS, POSITIONS, SHAPES, describe_shapes_image, shapes_caption
from genpix.device import set_cpu_threads

Reader = Callable[[np.ndarray], tuple | None]


def prompts(data: str) -> tuple[tuple[str, ...], list[tuple[str, tuple]], Reader]:
    """(attribute names, [(caption, attributes)], the pixel reader) of a dataset."""
    if data == "shape-scenes":
        return (("count", "size", "shape", "colour", "position"),
                [(c, scenes.parse_scene_caption(c)) for c in scenes.all_captions()], scenes.describe_scene)
    cases = [(shapes_caption(*attrs), attrs) for attrs in itertools.product(SHAPES, COLOURS, POSITIONS)]
    return ("shape", "colour", "position"), cases, describe_shapes_image


def prompt_fidelity(model: str, n: int, data: str = "shapes", **options) -> dict:
    pipe = genpix.load_pipeline(model)
    names, cases, read = prompts(data)
    hits = dict.fromkeys((*names, "all"), 0)
    total, seconds = 0, 0.0
    for k, (prompt, wanted) in enumerate(cases):
        tic = time.perf_counter()
        out = pipe(prompt=prompt, n=n, seed=100 * k, **options)
        seconds += time.perf_counter() - tic
        for image in out.images:
            seen = read(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
            total += 1
            if seen is None:
                continue
            matches = [a == b for a, b in zip(seen, wanted)]
            for key, ok in zip(names, matches):
                hits[key] += ok
            hits["all"] += all(matches)
    return {"model": model, "data": data, "prompts": len(cases), "images": total, "options": options,
            "ms_per_image": 1000 * seconds / total, **{key: value / total for key, value in hits.items()}}


def main() -> None:
    parser = sampling_parser(__doc__.splitlines()[0], n=2, n_help="images per prompt", cfg_scale=5.0)
    parser.add_argument("--data", choices=("shapes", "shape-scenes"), default="shapes",
                        help="the dataset the model was trained on")
    args = parser.parse_args()
    set_cpu_threads()
    result = prompt_fidelity(args.model, args.n, args.data, steps=args.steps, sampler=args.sampler,
                             cfg_scale=args.cfg_scale)
    names = prompts(args.data)[0]
    print(f"{args.model}: {result['images']} images of {result['prompts']} prompts ({args.sampler}, {args.steps} "
          f"steps, CFG {args.cfg_scale}), {result['ms_per_image']:.0f} ms/image; prompt matched: "
          + ", ".join(f"{name} {result[name]:.2f}" for name in names) + f", all {result['all']:.2f}")
    write_json(result, args.json)


if __name__ == "__main__":
    main()
