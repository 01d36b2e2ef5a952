"""What applying LoRAs costs on Stable Diffusion 1.5 shapes: merging (genpix's way) against an extra
low-rank product in every forward (sd-webui's ``lora_functional``).

Random weights: SD 1.5's U-Net (prepacked for oneDNN, as genpix's pipelines run it on a CPU) and
CLIP ViT-L/14 text encoder; random kohya LoRAs of rank ``--rank`` on every linear layer of the
U-Net's transformers and the text encoder's attention and MLP (sd-scripts' default targets, 192 + 72
modules). Reported, for 1 and 3 LoRAs:

- merge, first request: reading nothing (files are parsed once and cached), computing W + sum s B A
  for every touched module into fresh memory and swapping the merged tensors in; then a switch to
  another set (1 -> 3 LoRAs, 3 -> 1), which reuses the previous merge's memory; restore (swap back);
- merge, repeated request with the same set: the cached merged tensors swapped in;
- the U-Net step (batch 2: one step with classifier-free guidance) plain, with merged weights (the
  first step after a merge repacks the 1x1 projections) and with the forward-hook alternative.

    GENPIX_THREADS=1 python benchmarks/bench_lora.py --size 256 --rank 32
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from genpix.device import set_cpu_threads
from genpix.models.cpu_prepack import PackedConv2d, prepack_convolutions
from genpix.models.lora_apply import module_weight
from genpix.models.sd_unet import SD1, SDUNet
from genpix.models.text import CLIPTextConfig, CLIPTextModel
from genpix.pipelines.extra_networks import NetworkLibrary, NetworkSpec


def random_lora(unet: torch.nn.Module, text: torch.nn.Module, rank: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, root, inside in (("lora_unet_", unet, ".attentions."), ("lora_te_", text, ".layers.")):
        for path, module in root.named_modules():
            if inside not in path or not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, PackedConv2d)):
                continue
            w = module_weight(module)
            key = prefix + path.replace(".", "_")
            state[f"{key}.lora_down.weight"] = torch.randn(rank, *w.shape[1:], generator=g) * 0.01
            state[f"{key}.lora_up.weight"] = torch.randn(w.shape[0], rank, *w.shape[2:], generator=g) * 0.01
            state[f"{key}.alpha"] = torch.tensor(rank / 2)
    return state


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


EXTRA_FLOPS = [0]  # multiply-adds x 2 of the forward hooks' low-rank products


def forward_hooks(unet: torch.nn.Module, states: list[dict[str, torch.Tensor]]) -> list:
    """sd-webui's lora_functional: y + s up(down(x)) per LoRA, as forward hooks."""
    named = {"lora_unet_" + p.replace(".", "_"): m for p, m in unet.named_modules()}
    hooks = []
    for state in states:
        for key in {k.partition(".")[0] for k in state if k.startswith("lora_unet_")}:
            down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
            scale = float(state[f"{key}.alpha"]) / down.shape[0]

            def hook(module, inputs, output, down=down, up=up, scale=scale):
                x = inputs[0]
                positions = x[0, 0].numel() if down.ndim == 4 else x.shape[-2]
                EXTRA_FLOPS[0] += 2 * x.shape[0] * positions * down.shape[0] * (down[0].numel() + up.shape[0])
                if down.ndim == 4:
                    return output + F.conv2d(F.conv2d(x, down), up) * scale
                return output + F.linear(F.linear(x, down), up) * scale

            hooks.append(named[key].register_forward_hook(hook))
    return hooks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--folder", default="/tmp/bench-lora")
    parser.add_argument("--json")
    args = parser.parse_args()
    set_cpu_threads()
    torch.manual_seed(0)
    unet = SDUNet(SD1).eval().requires_grad_(False)
    text = CLIPTextModel(CLIPTextConfig.sd1()).eval().requires_grad_(False)
    prepack_convolutions(unet)
    x = torch.randn(2, 4, args.size // 8, args.size // 8)
    t, context = torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
    step = lambda: unet(x, t, context)  # noqa: E731
    from pathlib import Path

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    states = [random_lora(unet, text, args.rank, seed) for seed in range(3)]
    for i, state in enumerate(states):
        save_file(state, str(folder / f"l{i}.safetensors"))
    result = {"size": args.size, "rank": args.rank, "threads": torch.get_num_threads(),
              "modules": len(states[0]) // 3}
    with torch.inference_mode():
        step()
        result["step_plain_s"] = timed(step, 2)
        library = NetworkLibrary(folder)
        te = {"lora_te_": text}
        for i in range(3):  # parse (and cache) the files outside the timing
            library.read(library.find(f"l{i}"))
        # a cold merge (fresh memory), a switch to another set (the buffers reused), the same set again
        for label, names in (("first_1", ["l0"]), ("switch_3", ["l0", "l1", "l2"]), ("switch_1", ["l1"])):
            manager = library.applied(unet, te, [NetworkSpec(n, 1.0, 1.0) for n in names])
            result[f"merge_{label}_s"] = timed(manager.__enter__)
            result[f"step_merged_first_{label}_s"] = timed(step)  # repacks the 1x1 projections
            manager.__exit__(None, None, None)
        result["merged_mib"] = sum(w.numel() * w.element_size() for w in library._merged[1].values()) / 2 ** 20
        manager = library.applied(unet, te, [NetworkSpec("l1", 1.0, 1.0)])
        result["merge_repeat_s"] = timed(manager.__enter__)
        result["step_merged_s"] = timed(step, 2)
        result["restore_s"] = timed(lambda: manager.__exit__(None, None, None))
        for count in (1, 3):
            hooks = forward_hooks(unet, states[:count])
            EXTRA_FLOPS[0] = 0
            step()
            result[f"forward_extra_gflop_{count}"] = EXTRA_FLOPS[0] / 1e9
            result[f"step_forward_{count}_s"] = timed(step, 2)
            for hook in hooks:
                hook.remove()
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
