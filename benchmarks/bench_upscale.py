"""4x upscale of a picture with a full-size ESRGAN RRDBNet (23 blocks, 64 features, random weights):
seconds and peak memory, untiled and tiled, each configuration in a fresh process on 1 thread.

Peak memory is the process's peak resident set size (``ru_maxrss``) and its rise over the resident
size just before the upscale (network built, input made), which is what the upscale itself costs.

    python benchmarks/bench_upscale.py --size 256 --tiles 0 192 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(size: int, tile: int, overlap: int, blocks: int, features: int) -> dict:
    import torch

    from genpix.models.rrdbnet import RRDBNet, RRDBNetConfig
    from genpix.pipelines.tiling import TileConfig, tiled_apply

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = RRDBNet(RRDBNetConfig(scale=4, num_blocks=blocks, num_features=features)).eval().requires_grad_(False)
    x = torch.rand(1, 3, size, size)
    tiled_apply(net, x[..., :16, :16], 4, TileConfig(0))  # warm-up: oneDNN kernels picked once
    before = _rss_mib()
    start = time.perf_counter()
    y = tiled_apply(net, x, 4, TileConfig(tile, overlap))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "tile": tile, "overlap": overlap, "seconds": round(seconds, 2),
            "peak_rss_mib": round(peak), "rise_mib": round(peak - before), "out": list(y.shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tiles", type=int, nargs="+", default=[0, 192, 128], help="0 = untiled")
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=23)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process's run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.size, args.tiles[0], args.overlap, args.blocks, args.features)))
        return
    print(f"| input | tile / overlap | seconds | peak RSS (MiB) | rise during upscale (MiB) |\n|---|---|---|---|---|")
    for tile in args.tiles:
        command = [sys.executable, __file__, "--one", "--size", str(args.size), "--tiles", str(tile),
                   "--overlap", str(args.overlap), "--blocks", str(args.blocks), "--features", str(args.features)]
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        tiling = "untiled" if tile == 0 else f"{tile} / {args.overlap}"
        print(f"| {args.size}x{args.size} -> {row['out'][-1]}x{row['out'][-2]} | {tiling} | {row['seconds']} "
              f"| {row['peak_rss_mib']} | {row['rise_mib']} |", flush=True)


if __name__ == "__main__":
    main()
