"""Stable Diffusion 1.5-shaped txt2img end to end: genpix exact, genpix with each less-work switch
(pipelines/fast.py) and all together, against diffusers' StableDiffusionPipeline on the same weights.

One process, random weights in SD 1.5's shapes (U-Net 859.5M parameters, the 128/256/512/512
autoencoder, the 12-layer 768-wide CLIP text tower; a byte-level CLIP vocabulary so that every
prompt encodes), shared by assignment between diffusers' modules and genpix's (genpix's
convolutions then prepacked as genpix.load_pipeline does); the tiny decoder is a random TAESD-shaped
decoder (its time is real, its pictures are not: the cost of the distilled decoders in PSNR is
measured on the bundled models, docs/benchmarks.md). Every run: the same prompt, negative prompt,
seed and starting latents, DPM++ 2M (Karras sigmas on both sides), CFG 7, batch 1, float32; wall
time of the whole call (text encoding, sampling, decoding), and each run's deviation from genpix's
exact pictures (PSNR of the worst image, largest absolute difference on [0, 1] pixels); runs with the
tiny decoder are compared with the exact latents tiny-decoded, so their figure is the sampling's.

    GENPIX_THREADS=2 python benchmarks/bench_fast_sd.py --size 256 --json fast_sd_256.json
    GENPIX_THREADS=2 python benchmarks/bench_fast_sd.py --size 512 --json fast_sd_512.json

``--tiny`` builds small networks instead (a smoke test in seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from genpix.device import set_cpu_threads
from genpix.io.sd_common import alphas_cumprod_from_scheduler, assign_weights
from genpix.io.sd_loader import SDComponents
from genpix.metrics.psnr import psnr
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.cpu_prepack import prepack_on_cpu
from genpix.models.sd_unet import SDUNet, SDUNetConfig
from genpix.models.taesd import TinyDecoder, TinyDecoderConfig
from genpix.models.text import CLIPTextConfig, CLIPTextModel
from genpix.models.tokenizer import CLIPTokenizer
from genpix.pipelines.preview import TinyDecoderSpace
from genpix.pipelines.text_to_image import sd_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from bench_sd_memory import write_tokenizer  # noqa: E402
from bench_sd_unet import SD15_UNET, SD_VAE  # noqa: E402

PROMPT, NEGATIVE, SEED = "a photograph of an astronaut riding a horse", "blurry, low quality", 7
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 steps_offset=1, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            max_position_embeddings=77, hidden_act="quick_gelu")
TINY_UNET = dict(block_out_channels=(32, 64, 64, 64), cross_attention_dim=768, attention_head_dim=4)
TINY_VAE = dict(SD_VAE, block_out_channels=(32, 32, 64, 64))
# name -> request fields over the exact run (20 steps DPM++ 2M Karras, CFG 7)
RUNS = {
    "exact": {},
    "deepcache 3": {"deepcache_interval": 3},
    "token merging 0.5": {"token_merging_ratio": 0.5},
    "tiny decode": {"tiny_decode": True},
    "all three": {"deepcache_interval": 3, "token_merging_ratio": 0.5, "tiny_decode": True},
    "--fast (15 steps, deepcache 2, ToMe 0.5, tiny)": {"steps": 15, "deepcache_interval": 2,
                                                       "token_merging_ratio": 0.5, "tiny_decode": True},
    # DeepCache's finest skip branch (deepcache_block 1: after the finest level's first resnet and transformer)
    "deepcache 3 fine": {"deepcache_interval": 3, "deepcache_block": 1},
    "all (fine)": {"deepcache_interval": 3, "deepcache_block": 1, "token_merging_ratio": 0.5, "tiny_decode": True},
    "--fast fine (15 steps, deepcache 2 block 1, ToMe 0.5, tiny)": {
        "steps": 15, "deepcache_interval": 2, "deepcache_block": 1, "token_merging_ratio": 0.5, "tiny_decode": True},
    "--fast fine 3 (15 steps, deepcache 3 block 1, ToMe 0.5, tiny)": {
        "steps": 15, "deepcache_interval": 3, "deepcache_block": 1, "token_merging_ratio": 0.5, "tiny_decode": True},
    # the cost of a few-step model's path (LCM / Turbo / Lightning shapes: 4 steps, CFG 1 = no unconditional
    # batch, tiny decoder); on random weights its pictures say nothing, its time is what such a model takes
    "few-step (4 steps Euler, CFG 1, tiny)": {"steps": 4, "sampler": "Euler", "schedule": "SGM Uniform",
                                              "cfg_scale": 1.0, "tiny_decode": True},
}


def build(folder: Path, tiny: bool):
    """(diffusers' pipeline, genpix's pipeline) on the same random weights."""
    from diffusers import AutoencoderKL as DiffusersVAE
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig as HFTextConfig
    from transformers import CLIPTextModel as HFTextModel
    from transformers import CLIPTokenizer as HFTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET)).eval()
    vae = DiffusersVAE(**(TINY_VAE if tiny else SD_VAE)).eval()
    text = HFTextModel(HFTextConfig(**TEXT, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)).eval()
    vocab = write_tokenizer(folder / "tokenizer")
    tokenizer = HFTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"), model_max_length=77)
    scheduler = DPMSolverMultistepScheduler(**SCHEDULER)
    theirs = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=scheduler,
                                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ours_unet = assign_weights(SDUNet, SDUNetConfig.from_diffusers(dict(unet.config)), unet.state_dict(), "bench")
    ours_vae = assign_weights(AutoencoderKL, AutoencoderConfig.from_diffusers(dict(vae.config)), vae.state_dict(),
                              "bench")
    text_state = {("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in text.state_dict().items()
                  if not k.endswith("position_ids")}  # transformers 5 leaves the text_model. prefix out
    ours_text = assign_weights(CLIPTextModel, CLIPTextConfig.sd1(), text_state, "bench")
    components = SDComponents(CLIPTokenizer.from_folder(vocab), ours_text, ours_unet, ours_vae,
                              alphas_cumprod_from_scheduler(SCHEDULER), "eps", "sd15-random")
    pipe = sd_pipeline(components, safety_checks=())
    prepack_on_cpu(pipe.device, ours_unet, ours_vae)  # as genpix.load_pipeline runs a checkpoint on a CPU
    torch.manual_seed(1)
    pipe.parts = replace(pipe.parts, preview=TinyDecoderSpace(TinyDecoder(TinyDecoderConfig())))
    return theirs, pipe


def timed(fn) -> tuple[float, torch.Tensor]:
    tic = time.perf_counter()
    images = fn()
    return time.perf_counter() - tic, images


def deviation(images: torch.Tensor, exact: torch.Tensor) -> dict:
    return {"psnr_db": psnr(images, exact).min().item(), "max_abs_difference": (images - exact).abs().max().item()}


def run(size: int, steps: int, tiny: bool, only: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="genpix-fast-sd-") as folder:
        theirs, pipe = build(Path(folder), tiny)
    latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(SEED))
    base = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, sampler="DPM++ 2M", schedule="Karras",
                cfg_scale=7.0, seed=SEED, width=size, height=size, latents=latents)
    result = {"size": size, "steps": steps, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "tiny": tiny, "runs": {}}
    with torch.inference_mode():
        pipe(**{**base, "steps": 1})  # warm-up: oneDNN packs the weights at the first call's sizes
        references = {}  # the exact pictures, full and tiny-decoded (the random tiny decoder's own pictures are noise)
        for name in [n for n in RUNS if not only or n in only or n in ("exact", "tiny decode")]:
            fields = RUNS[name]
            seconds, images = timed(lambda: pipe(**{**base, **fields}).tensors)
            tiny_decoded = bool(fields.get("tiny_decode"))
            reference = references.setdefault(tiny_decoded, images)
            entry = {"seconds": seconds, "against": "tiny decode" if tiny_decoded else "exact",
                     **(deviation(images, reference) if reference is not images else {})}
            result["runs"][name] = entry
            print(json.dumps({name: entry}), flush=True)
        exact = references[False]
        seconds, images = timed(lambda: torch.from_numpy(theirs(
            PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7.0, height=size, width=size,
            latents=latents,
            output_type="np").images).permute(0, 3, 1, 2))
        result["runs"]["diffusers"] = {"seconds": seconds, **deviation(images.float(), exact)}
        print(json.dumps({"diffusers": result["runs"]["diffusers"]}), flush=True)
    reference = result["runs"]["diffusers"]["seconds"]
    for entry in result["runs"].values():
        entry["speedup_vs_diffusers"] = reference / entry["seconds"]
    return result


def table(result: dict) -> str:
    lines = ["| run | seconds | speed-up vs diffusers | PSNR (dB) | max abs diff | against |", "|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        quality = (f"{r['psnr_db']:.1f} | {r['max_abs_difference']:.3f}" if "psnr_db" in r else "- | -")
        quality += f" | {r.get('against', 'exact')}"
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['speedup_vs_diffusers']:.2f}x | {quality} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps of the exact run (default 20)")
    parser.add_argument("--tiny", action="store_true", help="small random networks: a smoke test")
    parser.add_argument("--only", nargs="*", default=[], help=f"genpix runs to time (default all: {list(RUNS)})")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    set_cpu_threads()
    result = run(args.size, args.steps, args.tiny, args.only)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
