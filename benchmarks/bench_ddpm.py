"""Pixel-space diffusion throughput on this machine: training images/s and DDIM sampling ms/image of
genpix's U-Net presets, against a diffusers UNet2DModel of about the same size in the same run.

    GENPIX_THREADS=2 python benchmarks/bench_ddpm.py --preset tiny --image-size 28 --batch 64

Not a test: it prints one line per measurement (and the commands belong in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time

import torch

from genpix.device import set_cpu_threads
from genpix.diffusion import samplers
from genpix.diffusion.config import DDPMConfig
from genpix.models.unet import UNet


def diffusers_twin(config: DDPMConfig):
    """UNet2DModel with the same levels, widths, blocks and attention as our config."""
    from diffusers import UNet2DModel

    u = config.unet_config()
    widths = tuple(u.base_channels * m for m in u.channel_mult)
    down = tuple("AttnDownBlock2D" if i in u.attention_levels else "DownBlock2D" for i in range(len(widths)))
    up = tuple("AttnUpBlock2D" if i in u.attention_levels else "UpBlock2D" for i in reversed(range(len(widths))))
    return UNet2DModel(sample_size=u.image_size, in_channels=u.channels, out_channels=u.channels,
                       block_out_channels=widths, layers_per_block=u.num_res_blocks, down_block_types=down,
                       up_block_types=up, norm_num_groups=u.norm_groups, attention_head_dim=u.head_channels)


def time_it(fn, repeats: int) -> float:
    fn()  # warm-up
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - tic) / repeats


def bench(name: str, network, config: DDPMConfig, batch: int, train_steps: int, sample_n: int, steps: int):
    c, s = config.channels, config.image_size
    x = torch.rand(batch, c, s, s) * 2 - 1
    t = torch.randint(0, 1000, (batch,)).float()
    opt = torch.optim.AdamW(network.parameters(), lr=1e-4)

    def train_step():
        out = network(x, t)
        loss = (out - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    network.train()
    train_s = time_it(train_step, train_steps)
    network.eval()
    den = config.denoiser(network)
    noise = torch.randn(sample_n, c, s, s)
    with torch.inference_mode():
        sample_s = time_it(lambda: samplers.sample(den, noise, steps, "DDIM"), 1)
    params = sum(p.numel() for p in network.parameters()) / 1e6
    print(f"{name:28s} {params:6.2f}M params  train {batch / train_s:7.1f} img/s (batch {batch})  "
          f"sample {1000 * sample_s / sample_n:7.1f} ms/image (DDIM {steps} steps, batch {sample_n})")
    return batch / train_s, sample_s / sample_n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--sample-n", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--no-diffusers", action="store_true")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {set_cpu_threads()} threads")
    config = DDPMConfig(image_size=args.image_size, preset=args.preset)
    torch.manual_seed(0)
    ours = bench(f"genpix {args.preset} {args.image_size}px", UNet(config.unet_config()), config,
                 args.batch, args.train_steps, args.sample_n, args.steps)
    if not args.no_diffusers:
        twin = diffusers_twin(config)
        wrapped = lambda x, t, **cond: twin(x, t).sample  # noqa: E731
        wrapped.parameters, wrapped.train, wrapped.eval = twin.parameters, twin.train, twin.eval
        theirs = bench("diffusers UNet2DModel twin", wrapped, config, args.batch, args.train_steps,
                       args.sample_n, args.steps)
        print(f"ratio genpix/diffusers: training {ours[0] / theirs[0]:.2f}x faster, "
              f"sampling {theirs[1] / ours[1]:.2f}x faster")


if __name__ == "__main__":
    main()
