"""One SDXL-shaped U-Net step: genpix's SD U-Net grown to the SDXL layout against diffusers' UNet2DConditionModel.

SDXL 1.0 base's shape (320/640/1280 channels, no attention at the first level, transformer depth
1/2/10, 64 channels per head, 2048-d context, text_time additional embedding: 2.57B parameters), one
step with classifier-free guidance: batch 2 of latents (4, size/8, size/8), a (2, 77, 2048) context,
(2, 1280) pooled text embeddings and (2, 6) micro-conditioning ids. Both sides in the same process on
the same random weights (genpix's modules take diffusers' tensors by assignment: one copy, 10.3 GB in
float32), float32, inference mode. genpix is timed as its pipelines run it on a CPU, with the
convolution weights prepacked for oneDNN (models/cpu_prepack.py); ``--plain`` times its plain modules too.
Reports the median of ``--repeats`` timed calls after one warm-up call per side.

    GENPIX_THREADS=1 python benchmarks/bench_sdxl_unet.py --size 512 --repeats 3 --json sdxl_unet.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_sd_unet import median_seconds

from genpix.device import set_cpu_threads
from genpix.io.sd_loader import assign_weights
from genpix.models.cpu_prepack import prepack_convolutions
from genpix.models.sd_unet import SDUNet, SDUNetConfig

SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    sample_size=128, block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)


def bench(size: int, repeats: int, plain: bool) -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    tic = time.perf_counter()
    theirs = UNet2DConditionModel(**SDXL_UNET).eval()
    ours = assign_weights(SDUNet, SDUNetConfig.from_diffusers(dict(theirs.config)), theirs.state_dict(), "bench")
    result: dict = {"size": size, "batch": 2, "parameters": sum(p.numel() for p in ours.parameters()),
                    "build_s": time.perf_counter() - tic}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g)  # CFG: [uncond, cond]
    t, context = torch.tensor([500, 500]), torch.randn(2, 77, 2048, generator=g)
    added = {"text_embeds": torch.randn(2, 1280, generator=g),
             "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)}
    with torch.inference_mode():
        def run_theirs() -> torch.Tensor:
            return theirs(x, t, encoder_hidden_states=context, added_cond_kwargs=added).sample

        def run_ours() -> torch.Tensor:
            return ours(x, t, context, **added)

        want = run_theirs()
        result["diffusers_s"], result["diffusers_all_s"] = median_seconds(run_theirs, repeats)
        if plain:
            result["plain_max_abs_difference"] = (run_ours() - want).abs().max().item()
            result["plain_s"], result["plain_all_s"] = median_seconds(run_ours, repeats)
        prepack_convolutions(ours)
        result["max_abs_difference"] = (run_ours() - want).abs().max().item()
        result["genpix_s"], result["genpix_all_s"] = median_seconds(run_ours, repeats)
    result["speedup"] = result["diffusers_s"] / result["genpix_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (latents are size/8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (the median is reported)")
    parser.add_argument("--plain", action="store_true", help="also time genpix's modules before prepacking")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.size < 32 or args.size % 32:
        parser.error(f"--size must be a multiple of 32 (the U-Net halves the latents twice), got {args.size}")
    set_cpu_threads()
    r = {"threads": torch.get_num_threads(), "torch": torch.__version__, **bench(args.size, args.repeats, args.plain)}
    print(f"SDXL U-Net step {args.size}x{args.size}, batch 2, {r['threads']} thread(s): genpix {r['genpix_s']:.2f} s "
          f"(prepacked), diffusers {r['diffusers_s']:.2f} s, median of {args.repeats} ({r['speedup']:.2f}x); "
          f"max |diff| {r['max_abs_difference']:.1e}"
          + (f"; genpix plain {r['plain_s']:.2f} s" if "plain_s" in r else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
