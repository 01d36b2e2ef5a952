"""Class accuracy of a class-conditional model's samples, judged by the domain classifier.

For each class c, ``-n`` images are generated with ``--class c`` and classified by the network
`genpix eval train-features --data DATASET` trained (its logits); the accuracy is the share
classified as c. Also prints the wall time per image. Usage:

    GENPIX_THREADS=1 python benchmarks/class_accuracy.py fashion-ddpm --data fashion-mnist -n 50 \
        --steps 20 --sampler "DPM++ 2M" --cfg-scale 3 [--json out.json]
"""

from __future__ import annotations

import time

import torch
from sampling_args import sampling_parser, write_json

import genpix
from genpix.device import set_cpu_threads
from genpix.eval.features import extract, load_extractor


def class_accuracy(model: str, dataset: str, n: int, **options) -> dict:
    pipe = genpix.load_pipeline(model)
    extractor = load_extractor("domain", dataset=dataset)
    channels, size = extractor.channels, extractor.image_size
    per_class, seconds = {}, 0.0
    for index, name in enumerate(pipe.class_names):
        tic = time.perf_counter()
        out = pipe(n=n, seed=1000 * index, class_name=index, **options)
        seconds += time.perf_counter() - tic
        probs = extract(extractor, out.tensors, channels, size).probs
        predicted = [extractor.class_names[i] for i in probs.argmax(1).tolist()]
        per_class[name] = sum(p == name for p in predicted) / n
    total = n * len(per_class)
    return {"model": model, "images": total, "options": options,
            "accuracy": sum(per_class.values()) / len(per_class), "per_class": per_class,
            "ms_per_image": 1000 * seconds / total}


def main() -> None:
    parser = sampling_parser(__doc__.splitlines()[0], n=50, n_help="images per class", cfg_scale=3.0)
    parser.add_argument("--data", default="fashion-mnist", help="the labelled dataset of the domain classifier")
    args = parser.parse_args()
    set_cpu_threads()
    torch.manual_seed(0)
    result = class_accuracy(args.model, args.data, args.n, steps=args.steps, sampler=args.sampler,
                            cfg_scale=args.cfg_scale)
    print(f"{args.model}: class accuracy {result['accuracy']:.3f} over {result['images']} images "
          f"({args.sampler}, {args.steps} steps, CFG {args.cfg_scale}); {result['ms_per_image']:.1f} ms/image")
    for name, acc in result["per_class"].items():
        print(f"  {name:12s} {acc:.2f}")
    write_json(result, args.json)


if __name__ == "__main__":
    main()
