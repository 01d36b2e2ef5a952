"""Prompt accuracy of a text-to-image model trained on Fashion-MNIST captions, judged by a classifier.

Two sets of prompts, ``-n`` images each, every image classified by the domain network of
`genpix eval train-features --data fashion-mnist`:

- ``training``: each class's first training caption ("a sneaker", "an ankle boot");
- ``reworded``: prompts the model never saw, with other words and other sentence shapes
  ("a running shoe", "an image of a purse"); none of them is a training caption
  (genpix.data.captions.FASHION_CAPTIONS), which the script checks.

The accuracy of a set is the share of images classified as the prompt's class. Usage:

    GENPIX_THREADS=2 python benchmarks/fashion_prompts.py runs/fashion-ldm -n 20 --steps 20 \
        --sampler "DPM++ 2M" --cfg-scale 5 [--json out.json]
"""

from __future__ import annotations

import time

import torch
from sampling_args import sampling_parser, write_json

import genpix
from genpix.data.captions import FASHION_CAPTIONS
from genpix.device import set_cpu_threads
from genpix.eval.features import extract, load_extractor

# Per class (Fashion-MNIST's label order): wordings absent from the training captions.
REWORDED = (
    ("a tee", "an image of a short-sleeved top"),
    ("jeans", "a product shot of slacks"),
    ("a knitted sweater", "an image of a cardigan"),
    ("a gown", "a product shot of a summer dress"),
    ("an overcoat", "an image of a winter jacket"),
    ("a flip-flop", "a product shot of summer sandals"),
    ("a blouse", "an image of a dress shirt"),
    ("a running shoe", "a product shot of a tennis shoe"),
    ("a purse", "an image of a tote bag"),
    ("a leather boot", "a product shot of short boots"),
)


def prompt_sets() -> dict[str, list[tuple[int, str]]]:
    """(class index, prompt) pairs of the two sets."""
    seen = {c for label in range(len(FASHION_CAPTIONS.phrases)) for c in FASHION_CAPTIONS.all_captions(label)}
    reworded = [(label, prompt) for label, prompts in enumerate(REWORDED) for prompt in prompts]
    assert not seen & {p for _, p in reworded}, "a reworded prompt is a training caption"
    training = [(label, phrases[0]) for label, phrases in enumerate(FASHION_CAPTIONS.phrases)]
    return {"training": training, "reworded": reworded}


def prompt_accuracy(model: str, n: int, **options) -> dict:
    pipe = genpix.load_pipeline(model)
    extractor = load_extractor("domain", dataset="fashion-mnist")
    result, seconds, images = {"model": model, "n": n, "options": options}, 0.0, 0
    for name, prompts in prompt_sets().items():
        per_prompt = {}
        for k, (label, prompt) in enumerate(prompts):
            tic = time.perf_counter()
            out = pipe(prompt=prompt, n=n, seed=1000 * k, **options)
            seconds += time.perf_counter() - tic
            images += n
            predicted = extract(extractor, out.tensors, extractor.channels, extractor.image_size).probs.argmax(1)
            per_prompt[prompt] = (predicted == label).float().mean().item()
        result[name] = {"accuracy": sum(per_prompt.values()) / len(per_prompt), "per_prompt": per_prompt}
    result["ms_per_image"] = 1000 * seconds / images
    return result


def main() -> None:
    args = sampling_parser(__doc__.splitlines()[0], n=20, n_help="images per prompt", cfg_scale=5.0).parse_args()
    set_cpu_threads()
    torch.manual_seed(0)
    result = prompt_accuracy(args.model, args.n, steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale)
    print(f"{args.model}: classifier accuracy ({args.sampler}, {args.steps} steps, CFG {args.cfg_scale}, "
          f"{args.n} images a prompt, {result['ms_per_image']:.0f} ms/image): training captions "
          f"{result['training']['accuracy']:.3f}, reworded prompts {result['reworded']['accuracy']:.3f}")
    for name in ("training", "reworded"):
        for prompt, accuracy in result[name]["per_prompt"].items():
            print(f"  {name:9s} {accuracy:.2f}  {prompt}")
    write_json(result, args.json)


if __name__ == "__main__":
    main()
