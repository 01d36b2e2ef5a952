"""One Stable Diffusion 1.5-shaped U-Net step and one VAE decode: genpix against diffusers.

Both sides run in the same process on the same random weights (genpix's modules take diffusers'
tensors by assignment, no second copy), float32, inference mode; genpix twice: its plain modules, then
with the convolution weights prepacked for oneDNN as its pipelines run them on a CPU
(models/cpu_prepack.py):

- U-Net: SD 1.5's UNet2DConditionModel shape (320/640/1280/1280 channels, 2 resnets per level,
  8 heads, 768-d context), one step with classifier-free guidance: batch 2 (uncond, cond) of
  latents (4, size/8, size/8) and a (2, 77, 768) context;
- VAE: SD's AutoencoderKL decoder (128/256/512/512 channels) from (1, 4, size/8, size/8).

Reports the median of ``--repeats`` timed calls after one warm-up call, and with ``--flops`` the
U-Net step's FLOPs (torch's FlopCounterMode on genpix's forward). At 512x512 a U-Net step takes
many seconds per call on a small CPU; the default is 256.

    GENPIX_THREADS=2 python benchmarks/bench_sd_unet.py --size 256 --repeats 3 --json sd_unet.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from genpix.device import set_cpu_threads
from genpix.io.sd_loader import assign_weights
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.cpu_prepack import prepack_convolutions
from genpix.models.sd_unet import SDUNet, SDUNetConfig

SD15_UNET = dict(sample_size=64, cross_attention_dim=768)  # the rest are UNet2DConditionModel's defaults
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              sample_size=512)


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """(median, all) wall seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times), times


def bench_unet(size: int, repeats: int, flops: bool) -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    theirs = UNet2DConditionModel(**SD15_UNET).eval()
    ours = assign_weights(SDUNet, SDUNetConfig.from_diffusers(dict(theirs.config)), theirs.state_dict(), "bench")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g)  # CFG: [uncond, cond]
    t = torch.tensor([500, 500])
    context = torch.randn(2, 77, 768, generator=g)
    with torch.inference_mode():
        want = theirs(x, t, encoder_hidden_states=context).sample
        result = {"size": size, "batch": 2, "parameters": sum(p.numel() for p in ours.parameters())}
        if flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                ours(x, t, context)
            result["gflop"] = counter.get_total_flops() / 1e9
        result.update(compare(lambda: ours(x, t, context), lambda: theirs(x, t, encoder_hidden_states=context).sample,
                              lambda: prepack_convolutions(ours), want, repeats))
    return result


def compare(mine: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor], prepack: Callable[[], object],
            want: torch.Tensor, repeats: int) -> dict:
    """Timings of genpix's module plain, diffusers', then genpix's prepacked (what its pipelines run on a
    CPU, models/cpu_prepack.py), with each genpix variant's largest difference from ``want``."""
    result = {"plain_max_abs_difference": (mine() - want).abs().max().item()}
    result["plain_s"], result["plain_all_s"] = median_seconds(mine, repeats)
    result["diffusers_s"], result["diffusers_all_s"] = median_seconds(theirs, repeats)
    prepack()
    result["max_abs_difference"] = (mine() - want).abs().max().item()
    result["genpix_s"], result["genpix_all_s"] = median_seconds(mine, repeats)
    result["speedup"] = result["diffusers_s"] / result["genpix_s"]
    result["plain_speedup"] = result["diffusers_s"] / result["plain_s"]
    return result


def bench_vae_decode(size: int, repeats: int) -> dict:
    from diffusers import AutoencoderKL as DiffusersAutoencoderKL

    torch.manual_seed(0)
    theirs = DiffusersAutoencoderKL(**SD_VAE).eval()
    ours = assign_weights(AutoencoderKL, AutoencoderConfig.from_diffusers(dict(theirs.config)), theirs.state_dict(),
                          "bench")
    z = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        return {"size": size, **compare(lambda: ours.decode(z), lambda: theirs.decode(z).sample,
                                        lambda: prepack_convolutions(ours), theirs.decode(z).sample, repeats)}


def summary(r: dict, repeats: int) -> str:
    return (f"genpix {r['genpix_s']:.2f} s (prepacked; plain {r['plain_s']:.2f} s), diffusers {r['diffusers_s']:.2f} s "
            f"(median of {repeats}; genpix {r['speedup']:.2f}x, plain {r['plain_speedup']:.2f}x), "
            f"max |diff| {r['max_abs_difference']:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latents are size/8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (the median is reported)")
    parser.add_argument("--flops", action="store_true", help="also count the U-Net step's FLOPs")
    parser.add_argument("--skip-vae", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.size < 64 or args.size % 64:
        parser.error(f"--size must be a multiple of 64 (the U-Net halves the latents 3 times), got {args.size}")
    set_cpu_threads()
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "unet": bench_unet(args.size, args.repeats, args.flops)}
    u = result["unet"]
    print(f"U-Net step {u['size']}x{u['size']}, batch 2: " + summary(u, args.repeats)
          + (f", {u['gflop']:.0f} GFLOP ({u['gflop'] / u['genpix_s']:.0f} GFLOP/s)" if "gflop" in u else ""))
    if not args.skip_vae:
        result["vae_decode"] = v = bench_vae_decode(args.size, args.repeats)
        print(f"VAE decode {v['size']}x{v['size']}: " + summary(v, args.repeats))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
