"""Peak memory and load time of a whole Stable Diffusion generation from a single-file checkpoint.

Builds a random model of one family's shapes offline with genpix's own modules and saves it as one
``.safetensors`` file in its original layout (in float16 by default, as most distributed files are),
with a tiny byte-level tokenizer folder (ids < 49,408):

- ``--family sd15``: SD 1.5 in the LDM layout (U-Net 859.5M parameters under ``model.diffusion_model.``,
  SD's autoencoder 128/256/512/512 under ``first_stage_model.``, the ViT-L/14 CLIP text tower, 12
  layers, 768 wide, under ``cond_stage_model.transformer.``; about 2 GB), generated at 512x512;
- ``--family sdxl``: SDXL 1.0 base in the SGM layout (models/sd_unet.py ``SDXL_BASE``, 2.567B
  parameters; the same autoencoder; ViT-L under ``conditioner.embedders.0.transformer.``; OpenCLIP
  ViT-bigG/14, 32 layers, 1280 wide, in open_clip's names with ``in_proj_weight`` and
  ``text_projection`` under ``conditioner.embedders.1.model.``; about 7 GB), generated at 1024x1024;
- ``--tiny``: small networks of the same layouts and a small picture: a smoke test in seconds;
- ``--medium``: the family's full-size text towers (123M parameters for SD 1.5, 817M for SDXL) with
  the tiny U-Net and autoencoder: what loading the text encoders costs, in a minute or two.

It then measures fresh subprocesses, each by its own ``wait4`` rusage (peak resident set, which
counts the file's mapped pages as well as anonymous memory; the checkpoint is written by another
process so that this one, whose peak Linux folds into its children's, stays small):

- ``load``: ``genpix.load_pipeline(FILE, tokenizer=DIR)`` only; the child also reports its
  /proc/self/status before and after loading (RssAnon: memory of its own; RssFile: pages of mapped
  files), to be set against the float32 weights' bytes (``weights_fp32_mib``): a loader that kept a
  second copy would grow RssAnon by more than those;
- ``load_pread`` (``--pread``): the same with safetensors' ``pread`` backend, which reads every
  tensor into anonymous memory: what a loader without a memory map costs;
- ``generate``: the real command line, ``python -m genpix generate "a photo" --model FILE --tokenizer DIR
  --width S --height S --steps 2 -n 1 --seed 0 -o OUT`` (``--steps`` and ``--sampler`` choose;
  one step of Euler is one U-Net call with classifier-free guidance, then the VAE decode).

Everything is written under a temporary folder that is deleted afterwards.

    nice -n 10 env GENPIX_THREADS=2 python benchmarks/bench_sd_memory.py --json sd_memory.json
    nice -n 10 env GENPIX_THREADS=2 python benchmarks/bench_sd_memory.py --family sdxl --steps 1 \
        --sampler Euler --json sdxl_memory.json
    python benchmarks/bench_sd_memory.py --family sdxl --tiny
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from genpix.io.sd_checkpoint import UNET_PREFIX, key_map, unet_table, vae_table
from genpix.io.sd_clip import CLIP_PREFIXES, SDXL_BIG_PREFIXES, to_open_clip
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.sd_unet import SD1, SDXL_BASE, SDUNet, SDUNetConfig
from genpix.models.text import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from genpix.models.tokenizer import BOS, EOS, bytes_to_unicode

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VAE_PREFIX = "first_stage_model."
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


@dataclass(frozen=True)
class Family:
    """The networks of one family's single file, where its text towers sit, and the picture's side."""

    unet: SDUNetConfig
    vae: AutoencoderConfig
    text: CLIPTextConfig  # openai CLIP ViT-L/14, in transformers' names under text_prefix
    text_prefix: str
    size: int  # the generated picture's width and height
    big: CLIPTextConfig | None = None  # SDXL's OpenCLIP ViT-bigG/14, in open_clip's names, with text_projection


# OpenCLIP ViT-bigG/14's text tower (SGM FrozenOpenCLIPEmbedder2): pools at the eos, the largest id
BIG_G = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                       hidden_act="gelu", eos_token_id=2)
# small networks of the same layouts: SDXL's and CLIP's 64 channels per head (which a single file
# cannot state), 4 autoencoder levels (8x downsampling), a vocabulary just above the tokenizer's 514 ids
TINY_TEXT = replace(CLIPTextConfig.sd1(), vocab_size=600, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=1)
TINY_VAE = AutoencoderConfig(block_out_channels=(32, 32, 64, 64))
FAMILIES = {
    "sd15": Family(SD1, AutoencoderConfig(), CLIPTextConfig.sd1(), CLIP_PREFIXES[0], 512),
    "sdxl": Family(SDXL_BASE, AutoencoderConfig(), CLIPTextConfig.sd1(), CLIP_PREFIXES[1], 1024, BIG_G),
}
TINY = {
    "sd15": Family(replace(SD1, block_out_channels=(32, 64, 64, 64), cross_attention_dim=64), TINY_VAE,
                   TINY_TEXT, CLIP_PREFIXES[0], 64),
    "sdxl": Family(replace(SDXL_BASE, block_out_channels=(64, 64, 128), num_attention_heads=(1, 1, 2),
                           transformer_layers_per_block=(1, 1, 2), cross_attention_dim=64 + 128,
                           addition_time_embed_dim=8, projection_class_embeddings_input_dim=128 + 6 * 8),
                   TINY_VAE, TINY_TEXT, CLIP_PREFIXES[1], 64,
                   replace(BIG_G, vocab_size=600, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=2)),
}
# the full-size text towers with the tiny U-Net (attending to their widths) and autoencoder
MEDIUM = {
    "sd15": replace(TINY["sd15"], unet=replace(TINY["sd15"].unet, cross_attention_dim=768), text=CLIPTextConfig.sd1()),
    "sdxl": replace(TINY["sdxl"], unet=replace(TINY["sdxl"].unet, cross_attention_dim=768 + 1280,
                                               projection_class_embeddings_input_dim=1280 + 6 * 8),
                    text=CLIPTextConfig.sd1(), big=BIG_G),
}

# run in the child: load only, then report /proc/self/status (MiB) before and after, and the load time
LOAD_CHILD = """
import json, sys, time
from functools import partial
import genpix, genpix.io.sd_loader, genpix.io.sdxl_loader, genpix.pipelines  # imported before the baseline

def status():
    return {k: int(v.split()[0]) / 1024 for k, _, v in (l.partition(":") for l in open("/proc/self/status"))
            if k in %r}

if sys.argv[3] == "pread":
    import genpix.io.sd_checkpoint as sd_checkpoint
    sd_checkpoint.load_file = partial(sd_checkpoint.load_file, backend="pread")
before = status()
tic = time.perf_counter()
pipe = genpix.load_pipeline(sys.argv[1], tokenizer=sys.argv[2])
seconds = time.perf_counter() - tic
print(json.dumps({"load_s": seconds, "before_load_mib": before, "after_load_mib": status()}))
""" % (STATUS_FIELDS,)


def ldm_tensors(module: nn.Module, table, prefix: str) -> dict[str, torch.Tensor]:
    """``module``'s weights under their LDM names (the autoencoder's attention projections as the
    1x1 convolutions the LDM layout stores)."""
    names = key_map(module, table)
    tensors = {}
    for key, tensor in module.state_dict().items():
        name = names[key]
        if ".attn_1." in name and name.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        tensors[prefix + name] = tensor
    return tensors


def checkpoint_tensors(family: Family, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Random weights of ``family``'s networks under the single file's names, in ``dtype``, and
    parameter counts by part (on the meta device under ``torch.device("meta")``: names and shapes only)."""
    torch.manual_seed(0)
    tensors, counts = {}, {}

    def add(part: str, module: nn.Module, tensors_of) -> None:
        # one module at a time, cast in place: its float32 weights are freed before the next is built
        counts[part] = sum(p.numel() for p in module.parameters())
        tensors.update(tensors_of(module.to(dtype)))

    add("unet", SDUNet(family.unet), lambda m: ldm_tensors(m, unet_table(family.unet), UNET_PREFIX))
    add("vae", AutoencoderKL(family.vae), lambda m: ldm_tensors(m, vae_table(family.vae), VAE_PREFIX))
    add("text", CLIPTextModel(family.text), lambda m: {family.text_prefix + k: v for k, v in m.state_dict().items()})
    tensors[family.text_prefix + "text_model.embeddings.position_ids"] = torch.arange(77)[None]  # as the files hold
    if family.big is not None:
        add("text_2", CLIPTextModelWithProjection(family.big), lambda m: to_open_clip(m.state_dict(),
                                                                                      SDXL_BIG_PREFIXES[0]))
    return tensors, counts


def write_checkpoint(path: Path, family: Family, dtype: torch.dtype) -> dict[str, int]:
    """A random single file of ``family``'s networks at ``path``; returns parameter counts by part."""
    tensors, counts = checkpoint_tensors(family, dtype)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return counts


def write_tokenizer(folder: Path) -> Path:
    """A byte-level CLIP vocabulary without merges: 514 ids, every prompt encodes."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def measure(command: list[str]) -> dict:
    """Run ``command``; its wall time, peak RSS (MiB, from its own rusage) and output."""
    tic = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{output[-3000:]}")
    return {"wall_s": time.perf_counter() - tic, "peak_rss_mib": usage.ru_maxrss / 1024,
            "output_tail": output.strip().splitlines()[-10:]}


def measure_load(path: Path, tokenizer: Path, backend: str) -> dict:
    """The load-only child: peak RSS, load time, /proc/self/status before and after, and how much
    its own memory (RssAnon) grew."""
    load = measure([sys.executable, "-c", LOAD_CHILD, str(path), str(tokenizer), backend])
    load.update(json.loads(load.pop("output_tail")[-1]))
    load["anon_growth_mib"] = load["after_load_mib"]["RssAnon"] - load["before_load_mib"]["RssAnon"]
    return load


def run(name: str, family: Family, dtype: str, work: Path, args: argparse.Namespace) -> dict:
    path, tokenizer = work / f"{name}-random-{dtype}.safetensors", write_tokenizer(work / "tokenizer")
    tic = time.perf_counter()
    # written by a spawned interpreter: Linux counts a parent's peak RSS into its children's
    # ru_maxrss (the pages it had when they were forked), so this process must stay small
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        counts = pool.apply(write_checkpoint, (path, family, DTYPES[dtype]))
    result = {"family": name, "tiny": args.tiny, "medium": args.medium, "dtype": dtype, "size": family.size,
              "parameters": counts,
              "weights_fp32_mib": 4 * sum(counts.values()) / 2 ** 20, "file_bytes": path.stat().st_size,
              "write_s": time.perf_counter() - tic}
    for backend in ("mmap", "pread") if args.pread else ("mmap",):
        result["load" if backend == "mmap" else "load_pread"] = measure_load(path, tokenizer, backend)
    side = str(family.size)
    genpix_cli = [sys.executable, "-m", "genpix"]  # the `genpix` command of this interpreter's genpix
    result["generate"] = measure([*genpix_cli, "generate", "a photo", "--model", str(path), "--tokenizer",
                                  str(tokenizer), "--width", side, "--height", side, "--steps", str(args.steps),
                                  "--sampler", args.sampler, "-n", "1", "--seed", "0", "-o", str(work / "out")])
    result["generate"].update(steps=args.steps, sampler=args.sampler,
                              images=sorted(p.name for p in (work / "out").glob("*.png")))
    path.unlink()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=list(FAMILIES), default="sd15",
                        help="sd15: SD 1.5, LDM layout, 512x512; sdxl: SDXL 1.0 base, SGM layout, 1024x1024")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--tiny", action="store_true", help="small networks of the same layout: a smoke test")
    form.add_argument("--medium", action="store_true", help="the full-size text towers, the tiny U-Net and VAE")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["fp16"],
                        help="the checkpoint's stored dtypes to measure (default fp16)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps of the generation (default 2)")
    parser.add_argument("--sampler", default="Euler a", help="sampler of the generation (default 'Euler a')")
    parser.add_argument("--pread", action="store_true",
                        help="also load with safetensors' pread backend (no memory map), for comparison")
    parser.add_argument("--tmp", help="folder for the temporary checkpoint (default: the system's)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    family = (TINY if args.tiny else MEDIUM if args.medium else FAMILIES)[args.family]
    results = {"threads": os.environ.get("GENPIX_THREADS"), "torch": torch.__version__, "runs": []}
    for dtype in args.dtypes:
        with tempfile.TemporaryDirectory(prefix="genpix-sd-memory-", dir=args.tmp) as work:
            results["runs"].append(run(args.family, family, dtype, Path(work), args))
            print(json.dumps(results["runs"][-1], indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
