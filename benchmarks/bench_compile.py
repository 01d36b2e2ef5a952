"""Does torch.compile pay on a CPU? One SD 1.5-shaped U-Net step (CFG batch 2) at a given size:
genpix's modules as its pipelines run them (convolutions prepacked for oneDNN, models/cpu_prepack.py)
against the same modules under ``torch.compile`` with inductor's freezing (weights folded as
constants, oneDNN-packed at compile time), including what the first call costs.

One process, random weights (genpix's SDUNet in SD 1.5's shape), float32, inference mode. Reports
the first call of each side (for the compiled side: tracing, inductor code generation and the C++
compile; a compile cache on disk would pay this once per model and shape) and the median of
``--repeats`` later calls, plus the largest difference of the compiled output from the eager one.

    GENPIX_THREADS=2 python benchmarks/bench_compile.py --size 512 --repeats 2 --json compile.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from genpix.device import set_cpu_threads
from genpix.models.cpu_prepack import prepack_convolutions
from genpix.models.sd_unet import SD1, SDUNet


def timed_calls(fn, repeats: int) -> dict:
    """The first call's seconds, then the median (and all) of ``repeats`` calls."""
    tic = time.perf_counter()
    out = fn()
    first = time.perf_counter() - tic
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return {"first_call_s": first, "median_s": statistics.median(times), "all_s": times, "output": out}


def bench(size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    unet = SDUNet(SD1).eval().requires_grad_(False)
    plain = copy.deepcopy(unet)  # the same weights, for the compiler (before prepacking swaps the convolutions)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g)  # CFG: [uncond, cond]
    t, context = torch.tensor([500, 500]), torch.randn(2, 77, 768, generator=g)
    result: dict = {"size": size, "batch": 2, "threads": torch.get_num_threads(), "torch": torch.__version__}
    with torch.inference_mode():
        prepack_convolutions(unet)
        eager = timed_calls(lambda: unet(x, t, context), repeats)
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant-fold the weights (inductor's CPU inference mode)
    # the U-Net's blocks compile one by one (graph breaks between them), and freezing guards on each
    # block's own parameters: one compiled graph per block instance, past dynamo's default limit of 8
    torch._dynamo.config.recompile_limit = 512
    torch._dynamo.reset()
    compiled = torch.compile(plain)
    with torch.no_grad():  # freezing needs no_grad (inference_mode tensors cannot be traced as constants)
        frozen = timed_calls(lambda: compiled(x, t, context), repeats)
    result["max_abs_difference"] = (frozen.pop("output") - eager.pop("output")).abs().max().item()
    result["eager_prepacked"], result["compiled_freezing"] = eager, frozen
    result["speedup_after_compile"] = eager["median_s"] / frozen["median_s"]
    saved = eager["median_s"] - frozen["median_s"]
    result["calls_to_repay_compile"] = (frozen["first_call_s"] - frozen["median_s"]) / saved if saved > 0 else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latents are size/8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first (the median is reported)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    set_cpu_threads()
    result = bench(args.size, args.repeats)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
