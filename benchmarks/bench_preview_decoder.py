"""Preview decoder against the full decoder: ms to decode one 64x64 latent, and PSNR (dB) of the
preview against the full decoder's picture on held-out images.

    sd:          TAESD's decoder (64 channels, f = 8) and Stable Diffusion's VAE decoder, random
                 weights (timing only; 64x64 latent -> 512x512 picture)
    shapes-ldm,  the bundled models' distilled preview_decoder.safetensors and their first stage
    fashion-ldm  (64x64 latent -> 256x256 picture); PSNR on the test split's 32x32 images

    GENPIX_THREADS=1 python benchmarks/bench_preview_decoder.py --images 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch

from genpix.data import load_dataset
from genpix.device import set_cpu_threads
from genpix.io.tiny_decoder import load_tiny_decoder
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.taesd import TinyDecoder
from genpix.pipelines.models import bundled_models
from genpix.pipelines.preview import PREVIEW_FILE
from genpix.training.preview_decoder import PreviewDecoderTask, PreviewDecoderTrainingConfig, load_teacher

BUNDLED = {"shapes-ldm": ("shapes", 3), "fashion-ldm": ("fashion-mnist", 1)}


@torch.no_grad()
def ms_per_call(fn, latent: torch.Tensor, repeats: int) -> float:
    fn(latent)  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn(latent)
        times.append((time.perf_counter() - tic) * 1000)
    return statistics.median(times)


def sd_row(repeats: int) -> dict:
    torch.manual_seed(0)
    latent = torch.randn(1, 4, 64, 64)
    vae, tiny = AutoencoderKL(AutoencoderConfig()).eval(), TinyDecoder().eval()
    return {"model": "sd (random weights)", "picture": "512x512",
            "full_ms": round(ms_per_call(vae.decode, latent, 1), 1),
            "preview_ms": round(ms_per_call(tiny, latent, repeats), 1), "psnr_db": None}


def bundled_row(name: str, images: int, repeats: int) -> dict:
    spec, channels = BUNDLED[name]
    folder = bundled_models()[name]
    teacher = load_teacher(folder)
    tiny = load_tiny_decoder(folder / PREVIEW_FILE)
    latent = torch.randn(1, teacher.config.latent_channels, 64, 64)
    full_ms = ms_per_call(teacher.decode, latent, repeats)
    preview_ms = ms_per_call(tiny, latent, repeats)
    config = PreviewDecoderTrainingConfig(image_size=32, channels=channels, width=tiny.config.channels,
                                          blocks=tiny.config.blocks)
    task = PreviewDecoderTask(replace(config, first_stage=teacher.config), lr=1e-3, device=torch.device("cpu"),
                              teacher=teacher)
    task.student = tiny
    test = load_dataset(spec, split="test", image_size=32, channels=channels, limit=images)
    metrics = task.evaluate(test, limit=images)
    return {"model": name, "picture": f"{64 * teacher.config.downsampling_factor}px",
            "full_ms": round(full_ms, 1), "preview_ms": round(preview_ms, 1),
            "psnr_db": round(metrics["psnr_vs_full_decoder"], 2),
            "full_vs_image_db": round(metrics["psnr_full_vs_image"], 2),
            "preview_vs_image_db": round(metrics["psnr_preview_vs_image"], 2), "images": metrics["images"],
            "preview_params": sum(p.numel() for p in tiny.parameters()),
            "full_params": sum(p.numel() for p in teacher.decoder.parameters())
            + sum(p.numel() for p in teacher.post_quant_conv.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=(*BUNDLED, "sd"), default=(*BUNDLED, "sd"))
    args = parser.parse_args()
    print(json.dumps({"threads": set_cpu_threads(None), "torch": torch.__version__}))
    for name in args.models:
        row = sd_row(args.repeats) if name == "sd" else bundled_row(name, args.images, args.repeats)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
