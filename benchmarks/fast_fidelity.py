"""What the less-work switches (pipelines/fast.py) cost on the bundled trained models.

- ``shapes-ldm``: prompt fidelity read from the pixels (benchmarks/prompt_fidelity.py: the 90
  shape / colour / position captions, ``-n`` images each) with each switch, and the PSNR of every
  picture against the exact one of the same prompt and seed (mean and worst);
- ``fashion-ldm`` and ``fashion-ddpm``: the PSNR against the exact pictures, 16 images.

    GENPIX_THREADS=1 python benchmarks/fast_fidelity.py -n 2 --json fast_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from prompt_fidelity import prompt_fidelity

import genpix
from genpix.device import set_cpu_threads
from genpix.errors import GenpixError
from genpix.metrics.psnr import psnr

BASE = dict(steps=20, sampler="DPM++ 2M", cfg_scale=5.0)
SWITCHES = {"exact": {}, "deepcache 2": {"deepcache_interval": 2}, "deepcache 3": {"deepcache_interval": 3},
            "token merging 0.5": {"token_merging_ratio": 0.5}, "tiny decode": {"tiny_decode": True},
            "deepcache 3 + ToMe 0.5 + tiny": {"deepcache_interval": 3, "token_merging_ratio": 0.5,
                                              "tiny_decode": True}}


def deviation(images: torch.Tensor, exact: torch.Tensor) -> dict:
    values = psnr(images, exact)
    return {"psnr_mean_db": values.clamp(max=99).mean().item(), "psnr_worst_db": values.min().item()}


def pictures(pipe, fields: dict, requests: list[dict]) -> tuple[torch.Tensor, float]:
    tic = time.perf_counter()
    images = torch.cat([pipe(**BASE, **request, **fields).tensors for request in requests])
    return images, time.perf_counter() - tic


def psnr_rows(model: str, requests: list[dict], switches: dict) -> dict:
    pipe = genpix.load_pipeline(model)
    exact, _ = pictures(pipe, {}, requests)
    rows = {}
    for name, fields in switches.items():
        try:
            images, seconds = pictures(pipe, fields, requests)
        except GenpixError as error:  # e.g. token merging on the pixel U-Net
            rows[name] = {"skipped": str(error)}
            continue
        rows[name] = {"seconds": seconds, **deviation(images, exact)}
        print(json.dumps({model: {name: rows[name]}}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="images per shapes caption (default 2)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    set_cpu_threads()
    result = {"shapes-ldm": {}}
    for name, fields in SWITCHES.items():
        result["shapes-ldm"][name] = prompt_fidelity("shapes-ldm", args.n, **BASE, **fields)
        print(json.dumps({name: {k: result["shapes-ldm"][name][k] for k in ("all", "ms_per_image")}}), flush=True)
    shapes = [dict(prompt=p, seed=10 * s, n=4) for s, p in enumerate(("a red circle at the top left", "a blue square",
                                                                 "a green triangle at the bottom right",
                                                                 "a yellow circle at the bottom left"))]
    result["shapes-ldm psnr"] = psnr_rows("shapes-ldm", shapes, SWITCHES)
    fashion = [dict(prompt=p, seed=7, n=4) for p in ("a sneaker", "an ankle boot", "a dress", "a bag")]
    result["fashion-ldm psnr"] = psnr_rows("fashion-ldm", fashion, SWITCHES)
    ddpm = genpix.load_pipeline("fashion-ddpm")
    result["fashion-ddpm psnr"] = psnr_rows("fashion-ddpm", [dict(class_name=c, seed=7, n=4)
                                                             for c in ddpm.class_names[:4]], SWITCHES)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
