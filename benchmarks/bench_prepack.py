"""The bundled models with and without prepacked convolution weights (models/cpu_prepack.py).

Loads each bundled model twice, once as `genpix.load_pipeline` does (prepacked) and once with plain
convolutions, and reports the median wall time of generating the same images with each, and their
largest difference. Usage:

    GENPIX_THREADS=1 python benchmarks/bench_prepack.py --repeats 5
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
from bench_sd_unet import median_seconds

import genpix
from genpix.device import set_cpu_threads

JOBS = {
    "fashion-ddpm": dict(n=16, class_name="sneaker", steps=20, sampler="DPM++ 2M"),
    "shapes-ldm": dict(prompt="a red circle at the top left", n=4, steps=20, sampler="DPM++ 2M", cfg_scale=5),
    "fashion-ldm": dict(prompt="a running shoe", n=4, steps=20, sampler="DPM++ 2M", cfg_scale=5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    set_cpu_threads()
    for name, job in JOBS.items():
        packed = genpix.load_pipeline(name)
        with mock.patch("genpix.models.cpu_prepack.prepack_convolutions", return_value=0):
            plain = genpix.load_pipeline(name)
        with torch.inference_mode():
            difference = (plain(seed=0, **job).tensors - packed(seed=0, **job).tensors).abs().max().item()
            a, _ = median_seconds(lambda: plain(seed=0, **job), args.repeats)
            b, _ = median_seconds(lambda: packed(seed=0, **job), args.repeats)
        print(f"{name} ({job}): plain {a:.3f} s, prepacked {b:.3f} s ({a / b:.2f}x), max |diff| {difference:.1e}")


if __name__ == "__main__":
    main()
