"""``genpix generate PROMPT --model FILE_OR_DIR``: text-to-image with a Stable Diffusion model.

The model is a single-file ``.safetensors``/``.ckpt`` checkpoint (with its ``NAME.yaml`` beside it
when there is one) or a diffusers-format folder; the options are sd-webui's txt2img fields.
"""

from __future__ import annotations

import argparse

from genpix.cli.common import add_device, add_seed, finite_float, need, positive_int
from genpix.cli.generate import add_outputs, add_sampler_options, run_pipeline, write_outputs


def register(commands) -> None:
    p = commands.add_parser("generate", help="text-to-image with a Stable Diffusion 1.x/2.x model",
                            description="Generate images from a prompt with a Stable Diffusion checkpoint "
                                        "(.safetensors/.ckpt, LDM layout) or a diffusers-format folder.")
    p.add_argument("prompt", metavar="PROMPT", help="what to draw")
    p.add_argument("--model", help="a .safetensors/.ckpt file or a diffusers folder (model_index.json)")
    p.add_argument("--negative-prompt", help="what to steer away from (in place of the empty prompt)")
    p.add_argument("-n", "--num-images", type=positive_int, default=1, help="images to generate (default 1)")
    add_outputs(p)
    p.add_argument("--steps", type=positive_int, help="sampling steps (default 20)")
    p.add_argument("--sampler", help="sampler name, e.g. 'Euler a' (default) or 'DPM++ 2M Karras'")
    add_sampler_options(p)
    p.add_argument("--cfg-scale", type=finite_float, help="classifier-free guidance scale (default 7)")
    p.add_argument("--width", type=positive_int, help="image width, a multiple of 8 (default: the model's size)")
    p.add_argument("--height", type=positive_int, help="image height, a multiple of 8 (default: the model's size)")
    p.add_argument("--clip-skip", type=positive_int, default=1,
                   help="sd-webui's Clip skip: 1 uses the text encoder's last layer, 2 the one before (default 1)")
    p.add_argument("--vae", help="an external autoencoder file (.safetensors/.ckpt/.pt) to decode with")
    p.add_argument("--prediction", choices=("eps", "v"), help="override the parameterisation (v for 768-v models)")
    p.add_argument("--tokenizer", help="folder with the CLIP vocab.json and merges.txt (single files carry none)")
    p.add_argument("--no-safety-checker", dest="safety_checker", action="store_false",
                   help="do not run a diffusers folder's safety checker (which makes NSFW images black)")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.io.sd_loader import is_sd_model
    from genpix.pipelines import load_pipeline

    need(args.model is not None, "--model is required: a Stable Diffusion .safetensors/.ckpt file or diffusers folder")
    need(is_sd_model(args.model), f"{args.model}: not a Stable Diffusion model (a .safetensors/.ckpt file or a "
                                  f"diffusers folder with model_index.json); use genpix sample for genpix models")
    set_cpu_threads()
    loading = {k: v for k, v in (("tokenizer", args.tokenizer), ("vae", args.vae), ("prediction", args.prediction))
               if v is not None}
    loading.update({} if args.safety_checker else {"safety_checker": False})
    pipe = load_pipeline(args.model, device=resolve_device(args.device), **loading)
    options = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "steps": args.steps,
               "sampler": args.sampler, "cfg_scale": args.cfg_scale, "width": args.width, "height": args.height,
               "schedule": args.schedule, "eta": args.eta, "s_churn": args.s_churn, "s_noise": args.s_noise,
               "clip_skip": args.clip_skip}
    out = run_pipeline(pipe, args.num_images, args.seed, {k: v for k, v in options.items() if v is not None})
    write_outputs(out, args)
    return 0
