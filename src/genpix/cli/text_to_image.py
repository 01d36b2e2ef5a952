"""``genpix generate PROMPT --model FILE_OR_DIR``: text-to-image with a Stable Diffusion model.

The model is a single-file ``.safetensors``/``.ckpt`` checkpoint (with its ``NAME.yaml`` beside it
when there is one) or a diffusers-format folder; the options are sd-webui's txt2img fields.
"""

from __future__ import annotations

import argparse

from genpix.cli.common import add_device, add_loading, add_seed, need, positive_int, safety_options, sd_options
from genpix.cli.generate import add_sampling, run_pipeline, write_outputs


DEFAULT_TEXT_MODEL = "shapes-ldm"  # the bundled text-to-image model `generate` uses without --model


def register(commands) -> None:
    p = commands.add_parser("generate", help="text-to-image with a Stable Diffusion 1.x/2.x model",
                            description="Generate images from a prompt with a Stable Diffusion checkpoint "
                                        "(.safetensors/.ckpt, LDM layout) or a diffusers-format folder.")
    p.add_argument("prompt", metavar="PROMPT", help="what to draw")
    p.add_argument("--model", help="a Stable Diffusion .safetensors/.ckpt file or diffusers folder, or a genpix "
                                   "text-to-image model (an ldm run or a bundled name; default shapes-ldm)")
    p.add_argument("--negative-prompt", help="what to steer away from (in place of the empty prompt)")
    add_sampling(p, n=1, steps_help="sampling steps (default 20)",
                 sampler_help="sampler name, e.g. 'Euler a' (default) or 'DPM++ 2M Karras'",
                 cfg_help="classifier-free guidance scale (default 7)")
    p.add_argument("--width", type=positive_int, help="image width, a multiple of 8 (default: the model's size)")
    p.add_argument("--height", type=positive_int, help="image height, a multiple of 8 (default: the model's size)")
    p.add_argument("--clip-skip", type=positive_int, default=1,
                   help="sd-webui's Clip skip: 1 uses the text encoder's last layer, 2 the one before (default 1)")
    p.add_argument("--vae", help="an external autoencoder file (.safetensors/.ckpt/.pt) to decode with")
    p.add_argument("--prediction", choices=("eps", "v"), help="override the parameterisation (v for 768-v models)")
    add_loading(p, "folder with the CLIP vocab.json and merges.txt (single files carry none)")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.io.sd_loader import is_sd_model
    from genpix.pipelines import load_pipeline

    set_cpu_threads()
    model = args.model or DEFAULT_TEXT_MODEL
    loading = {**sd_options(args), **{k: v for k, v in (("vae", args.vae), ("prediction", args.prediction))
                                      if v is not None}}
    options = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "steps": args.steps,
               "sampler": args.sampler, "cfg_scale": args.cfg_scale, "width": args.width, "height": args.height,
               "schedule": args.schedule, "eta": args.eta, "s_churn": args.s_churn, "s_noise": args.s_noise,
               "clip_skip": args.clip_skip}
    options = {k: v for k, v in options.items() if v is not None}
    if is_sd_model(model):
        pipe = load_pipeline(model, device=resolve_device(args.device), **loading, **safety_options(args))
    else:  # a genpix text-to-image model (a trained ldm folder or a bundled name)
        need(not loading, f"{', '.join('--' + k for k in loading)} apply to Stable Diffusion models only")
        pipe = load_pipeline(model, device=resolve_device(args.device), **safety_options(args))
        need("prompt" in getattr(pipe, "parameters", ()),
             f"{model} ({pipe.family}) takes no prompt; use `genpix sample {model}`")
        if options.get("clip_skip") == 1:
            del options["clip_skip"]  # the default, meaningful for CLIP text encoders only
        refused = sorted(k for k in options if k not in pipe.parameters)
        need(not refused, f"{model} ({pipe.family}) takes no {', '.join('--' + k.replace('_', '-') for k in refused)}")
    out = run_pipeline(pipe, args.num_images, args.seed, options)
    write_outputs(out, args)
    return 0
