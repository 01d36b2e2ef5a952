"""Peak memory of a full 512x512 Stable Diffusion 1.5 generation from a single-file checkpoint.

Builds an SD 1.5-shaped random model offline with genpix's own modules (U-Net 859.5M parameters,
SD's autoencoder 128/256/512/512, the ViT-L/14 CLIP text tower: 12 layers, 768 wide, 49,408 rows),
saves it as one LDM-layout ``.safetensors`` file (in float16 by default, as most distributed SD
files are; about 2 GB) with a tiny byte-level tokenizer folder (ids < 49,408), then measures
fresh subprocesses, each by its own ``wait4`` rusage (peak resident set, which counts the file's
mapped pages as well as anonymous memory; the checkpoint is written by another process so that
this one, whose peak Linux folds into its children's, stays small):

- ``load``: ``genpix.load_pipeline(FILE, tokenizer=DIR)`` only; the child also reports its
  /proc/self/status after loading (RssAnon: memory of its own; RssFile: pages of mapped files);
- ``load_pread`` (``--pread``): the same with safetensors' ``pread`` backend, which reads every
  tensor into anonymous memory: what a loader without a memory map costs;
- ``generate``: the real command line, ``genpix generate "a photo" --model FILE --tokenizer DIR
  --width 512 --height 512 --steps 2 -n 1 --seed 0 -o OUT``.

Everything is written under a temporary folder that is deleted afterwards.

    nice -n 10 env GENPIX_THREADS=2 python benchmarks/bench_sd_memory.py --json sd_memory.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from genpix.io.sd_checkpoint import UNET_PREFIX, key_map, unet_table, vae_table
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.sd_unet import SD1, SDUNet
from genpix.models.text import CLIPTextConfig, CLIPTextModel
from genpix.models.tokenizer import BOS, EOS, bytes_to_unicode

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TEXT_PREFIX = "cond_stage_model.transformer."
VAE_PREFIX = "first_stage_model."
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")

# run in the child: load only, then report /proc/self/status (MiB) and the load time
LOAD_CHILD = """
import json, sys, time
from functools import partial
import genpix
if sys.argv[3] == "pread":
    import genpix.io.sd_checkpoint as sd_checkpoint
    sd_checkpoint.load_file = partial(sd_checkpoint.load_file, backend="pread")
tic = time.perf_counter()
pipe = genpix.load_pipeline(sys.argv[1], tokenizer=sys.argv[2])
seconds = time.perf_counter() - tic
status = {k: int(v.split()[0]) / 1024 for k, _, v in (l.partition(":") for l in open("/proc/self/status"))
          if k in %r}
print(json.dumps({"load_s": seconds, "after_load_mib": status}))
""" % (STATUS_FIELDS,)


def ldm_tensors(module: nn.Module, table, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``module``'s weights under their LDM names, in ``dtype`` (the autoencoder's attention
    projections as the 1x1 convolutions the LDM layout stores)."""
    names = key_map(module, table)
    tensors = {}
    for key, tensor in module.state_dict().items():
        name = names[key]
        if ".attn_1." in name and name.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        tensors[prefix + name] = tensor.to(dtype).contiguous()
    return tensors


def write_checkpoint(path: Path, dtype: torch.dtype) -> dict[str, int]:
    """An SD 1.5-shaped random single file at ``path``; returns parameter counts by part."""
    torch.manual_seed(0)
    tensors, counts = {}, {}
    unet = SDUNet(SD1)  # one module at a time: its float32 weights are freed before the next
    counts["unet"] = sum(p.numel() for p in unet.parameters())
    tensors.update(ldm_tensors(unet, unet_table(SD1), UNET_PREFIX, dtype))
    del unet
    vae_config = AutoencoderConfig()
    vae = AutoencoderKL(vae_config)
    counts["vae"] = sum(p.numel() for p in vae.parameters())
    tensors.update(ldm_tensors(vae, vae_table(vae_config), VAE_PREFIX, dtype))
    del vae
    text = CLIPTextModel(CLIPTextConfig.sd1())
    counts["text"] = sum(p.numel() for p in text.parameters())
    tensors.update({TEXT_PREFIX + k: v.to(dtype).contiguous() for k, v in text.state_dict().items()})
    tensors[TEXT_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(77)[None]  # as SD 1.x files hold
    del text
    save_file(tensors, path)
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


def run(dtype: str, work: Path, pread: bool) -> dict:
    path, tokenizer = work / f"sd15-random-{dtype}.safetensors", write_tokenizer(work / "tokenizer")
    tic = time.perf_counter()
    # written by a spawned interpreter: Linux counts a parent's peak RSS into its children's
    # ru_maxrss (the pages it had when they were forked), so this process must stay small
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        counts = pool.apply(write_checkpoint, (path, DTYPES[dtype]))
    result = {"dtype": dtype, "parameters": counts, "file_bytes": path.stat().st_size,
              "write_s": time.perf_counter() - tic}
    for backend in ("mmap", "pread") if pread else ("mmap",):
        load = measure([sys.executable, "-c", LOAD_CHILD, str(path), str(tokenizer), backend])
        load.update(json.loads(load.pop("output_tail")[-1]))
        result["load" if backend == "mmap" else "load_pread"] = load
    genpix_cli = shutil.which("genpix") or "genpix"
    result["generate"] = measure([genpix_cli, "generate", "a photo", "--model", str(path), "--tokenizer",
                                  str(tokenizer), "--width", "512", "--height", "512", "--steps", "2", "-n", "1",
                                  "--seed", "0", "-o", str(work / "out")])
    result["generate"]["images"] = sorted(p.name for p in (work / "out").glob("*.png"))
    path.unlink()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["fp16"],
                        help="the checkpoint's stored dtypes to measure (default fp16)")
    parser.add_argument("--pread", action="store_true",
                        help="also load with safetensors' pread backend (no memory map), for comparison")
    parser.add_argument("--tmp", help="folder for the temporary checkpoint (default: the system's)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    results = {"threads": os.environ.get("GENPIX_THREADS"), "torch": torch.__version__, "runs": []}
    for dtype in args.dtypes:
        with tempfile.TemporaryDirectory(prefix="genpix-sd-memory-", dir=args.tmp) as work:
            results["runs"].append(run(dtype, Path(work), args.pread))
            print(json.dumps(results["runs"][-1], indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
