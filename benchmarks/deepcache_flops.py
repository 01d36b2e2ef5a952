"""FLOPs of one SD 1.5 U-Net call with classifier-free guidance (batch 2), full and DeepCache-cached
at each cut of the finest level (models/deepcache.py), with and without token merging 0.5.

Counted by torch's FlopCounterMode (attention included) on the meta device: no weights, no
timing, seconds to run. Ratios are of the full call at the same size and merging.

    python benchmarks/deepcache_flops.py --size 256 512
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from genpix.models.deepcache import DeepCache, DeepCacheConfig
from genpix.models.sd_unet import SD1, SDUNet
from genpix.models.tome import TokenMergingConfig, merging

CUTS = {"whole finest level": None, "block 1 (finest branch)": 1}


def gflop(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def count(size: int, ratio: float) -> dict:
    with torch.device("meta"):
        unet = SDUNet(SD1).eval()
        x, context = torch.randn(2, 4, size // 8, size // 8), torch.randn(2, 77, SD1.cross_attention_dim)
    t = torch.tensor([500.0, 500.0], device="meta")
    tokens = merging(TokenMergingConfig(ratio, max_downsample=1), (size // 8, size // 8)) if ratio else nullcontext()
    with torch.no_grad(), tokens:
        result = {"full": gflop(lambda: unet(x, t, context))}
        for name, block in CUTS.items():
            deepcache = DeepCache(unet, DeepCacheConfig(interval=2, block=block))
            deepcache(x, t, context)  # the full call that fills the cache
            result[f"cached, {name}"] = gflop(lambda: deepcache(x, t, context))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[512], help="image sides in pixels (default 512)")
    args = parser.parse_args()
    for size in args.size:
        for ratio in (0.0, 0.5):
            result = count(size, ratio)
            shown = {k: f"{v:.0f} GFLOP ({v / result['full']:.3f})" for k, v in result.items()}
            print(json.dumps({"size": size, "token_merging_ratio": ratio, **shown}), flush=True)


if __name__ == "__main__":
    main()
