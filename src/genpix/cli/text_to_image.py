"""``genpix generate PROMPT --model FILE_OR_DIR``: text-to-image with a Stable Diffusion model.

The model is a single-file ``.safetensors``/``.ckpt`` checkpoint (with its ``NAME.yaml`` beside it
when there is one) or a diffusers-format folder; the options are sd-webui's txt2img fields.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genpix.cli.common import (add_device, add_loading, add_seed, finite_float, need, positive_int, safety_options,
                               sd_options)
from genpix.cli.generate import add_sampling, generation_request, run_pipeline, write_outputs
from genpix.pipelines.models import DEFAULT_TEXT_MODEL


def register(commands) -> None:
    p = commands.add_parser("generate", help="text-to-image (the bundled model, or Stable Diffusion 1.x/2.x)",
                            description="Generate images from a prompt with the bundled text-to-image model, a "
                                        "genpix model, a Stable Diffusion checkpoint (.safetensors/.ckpt, LDM layout) "
                                        "or a diffusers-format folder.")
    p.add_argument("prompt", metavar="PROMPT", help="what to draw")
    p.add_argument("--model", help="a Stable Diffusion .safetensors/.ckpt file or diffusers folder, or a genpix "
                                   f"text-to-image model (an ldm run or a bundled name; default {DEFAULT_TEXT_MODEL})")
    p.add_argument("--negative-prompt", help="what to steer away from (in place of the empty prompt)")
    p.add_argument("--style", action="append", default=[], metavar="NAME",
                   help="apply a style of --styles-file to the prompts (sd-webui's styles; repeat for several)")
    p.add_argument("--styles-file", default="styles.csv", help="sd-webui's styles.csv (default styles.csv)")
    add_sampling(p, n=1, steps_help="sampling steps (default 20)",
                 sampler_help="sampler name, e.g. 'Euler a' (default) or 'DPM++ 2M Karras'",
                 cfg_help="classifier-free guidance scale (default 7)")
    p.add_argument("--width", type=positive_int, help="image width, a multiple of 8 (default: the model's size)")
    p.add_argument("--height", type=positive_int, help="image height, a multiple of 8 (default: the model's size)")
    p.add_argument("--clip-skip", type=positive_int, default=1,
                   help="sd-webui's Clip skip: 1 uses the text encoder's last layer, 2 the one before (default 1)")
    p.add_argument("--vae", help="an external autoencoder file (.safetensors/.ckpt/.pt) to decode with, or 'tiny': "
                                 "the model's tiny decoder (TAESD; faster, a little less exact)")
    p.add_argument("--preview-decoder", metavar="FILE",
                   help="Stable Diffusion: a TAESD decoder file (taesd_decoder.safetensors) for --vae tiny")
    p.add_argument("--fast", action="store_true",
                   help="fewer steps and less work per step: 15 steps DPM++ 2M Karras, DeepCache interval 2, "
                        "token merging 0.5 and the tiny decoder where the model has one; LCM / Turbo / Lightning "
                        "models (by name or <lora:> tag): 4 steps of their sampler at CFG 1; a flag you give wins")
    p.add_argument("--prediction", choices=("eps", "v"), help="override the parameterisation (v for 768-v models)")
    p.add_argument("--noise-schedule", metavar="NAME",
                   help="sd-webui's noise schedule: 'Zero Terminal SNR' (or ztsnr) rescales the model's schedule to "
                        "zero terminal SNR (Lin et al. 2023; for v-prediction models); Default (default): the "
                        "model's own (already rescaled for a file with the ztsnr key)")
    hires = p.add_argument_group("hires fix", "sd-webui's two-pass txt2img: generate, upscale, img2img at the "
                                               "larger size")
    hires.add_argument("--hires-scale", type=finite_float, help="upscale factor of the second pass (e.g. 2); "
                                                                "turns the hires fix on")
    hires.add_argument("--hires-upscaler", help="a latent mode (Latent, the default; Latent (bicubic antialiased), "
                                                "...) or an upscaler: None, Lanczos, Nearest, or a file's stem in "
                                                "--upscalers-dir")
    hires.add_argument("--hires-steps", type=positive_int, help="second-pass steps (default: --steps)")
    hires.add_argument("--hires-denoise", type=finite_float, help="second-pass denoising strength (default 0.7)")
    hires.add_argument("--upscalers-dir", default="models/ESRGAN",
                       help="folder of ESRGAN-type upscaler files (default models/ESRGAN, as sd-webui)")
    p.add_argument("--refiner", metavar="MODEL", help="a refiner (e.g. SDXL's) that takes over the last steps, as "
                                                      "sd-webui's refiner")
    p.add_argument("--refiner-switch-at", type=finite_float, default=0.8,
                   help="the base denoises the steps i with i / steps <= this (default 0.8)")
    add_loading(p, "folder with the CLIP vocab.json and merges.txt (single files carry none)")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.pipelines import load_pipeline

    set_cpu_threads()
    vae = None if args.vae == "tiny" else args.vae
    loading = {**sd_options(args), **{k: v for k, v in (("vae", vae), ("prediction", args.prediction),
                                                        ("preview_decoder", args.preview_decoder)) if v is not None}}
    pipe = load_pipeline(args.model or DEFAULT_TEXT_MODEL, device=resolve_device(args.device), **loading,
                         **safety_options(args))
    if args.style:  # sd-webui's styles: applied to the prompt and negative prompt before anything else
        from genpix.io.styles import apply_styles, read_styles

        need(Path(args.styles_file).is_file(), f"--style needs a styles file; {args.styles_file} does not exist")
        args.prompt, args.negative_prompt = apply_styles(args.prompt, args.negative_prompt or "", args.style,
                                                         read_styles(args.styles_file))
    refiner = {}
    if args.refiner:  # loaded as the base is (tokenizer, --half, safety)
        refiner = {"refiner": load_pipeline(args.refiner, device=resolve_device(args.device), **sd_options(args),
                                            **safety_options(args)), "refiner_switch_at": args.refiner_switch_at}
    out = run_pipeline(pipe, generation_request(args, **_hires(args, pipe), **_less_work(args, pipe), **refiner))
    write_outputs(out, args)
    return 0


def _hires(args: argparse.Namespace, pipe) -> dict:
    """The hires fix's request fields from --hires-* (none without --hires-scale)."""
    if args.hires_scale is None:
        need(args.hires_upscaler is None and args.hires_steps is None and args.hires_denoise is None,
             "--hires-upscaler, --hires-steps and --hires-denoise need --hires-scale (the hires fix)")
        return {}
    pipe.upscalers_dir = args.upscalers_dir
    fields = {"enable_hr": True, "hr_scale": args.hires_scale, "hr_upscaler": args.hires_upscaler,
              "hr_second_pass_steps": args.hires_steps or 0}
    return fields if args.hires_denoise is None else {**fields, "strength": args.hires_denoise}


def _less_work(args: argparse.Namespace, pipe) -> dict:
    """--vae tiny and --fast's request fields (pipelines/fast.py); a flag given wins over the preset
    (a --sampler given drops the preset's schedule too)."""
    fields = {"tiny_decode": True} if args.vae == "tiny" else {}
    if not args.fast:
        return fields
    from genpix.pipelines.fast import fast_preset

    preset = fast_preset(pipe, args.prompt)
    if args.sampler is not None:
        preset.pop("schedule", None)
    return {**{k: v for k, v in preset.items() if getattr(args, k, None) is None}, **fields}
