"""``genpix sample``, ``latent-grid`` and ``interpolate``: pictures from a trained model."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from genpix.cli.common import add_device, add_seed, finite_float, need, positive_int, seed_int


def register(commands) -> None:
    p = commands.add_parser("sample", help="generate images with a model",
                            description="Generate images with a model folder or a bundled model.")
    p.add_argument("model", metavar="MODEL", help="model folder or bundled model name (genpix models)")
    add_sampling(p, n=16, steps_help="sampling steps (diffusion models)",
                 sampler_help="sampler name, e.g. 'Euler a' or 'DPM++ 2M Karras' (genpix samplers)",
                 cfg_help="classifier-free guidance scale")
    p.add_argument("--prompt", help="text prompt (text-conditioned models)")
    p.add_argument("--negative-prompt", help="negative prompt (text-conditioned models)")
    p.add_argument("--class", dest="class_name",
                   help="class name (class-conditioned models); all: -n images of every class, a grid row each; "
                        "null: the null class of guidance (default: each image's class drawn from the uniform prior)")
    p.add_argument("--trajectory", help="diffusion models: also write the denoising strip of the first "
                                        "image (x_t above the predicted x0, about 10 columns) to this file")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_sample)

    p = commands.add_parser("latent-grid", help="decode a grid over two latent directions (seed fig. 17.5)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-o", "--out", default="latent-grid.png", help="picture to write (default latent-grid.png)")
    p.add_argument("--size", type=positive_int, default=30, help="cells per side (default 30)")
    p.add_argument("--range", dest="extent", type=finite_float, default=1.0,
                   help="walk each axis over [-R, R] (default 1; in std units for pca)")
    p.add_argument("--dims", default=None,
                   help="two latent dimensions 'i,j' (the others 0); 'pca': the principal directions of "
                        "the encoded test images (VAE only); 'random': two random orthonormal "
                        "directions drawn with --seed (any model). Default: 0,1 for a 2-D latent, "
                        "else pca for a VAE and random for a GAN")
    p.add_argument("--data", help="images for --dims pca (default: the model's dataset, test split)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the --dims random directions (default 0)")
    p.add_argument("--class", dest="class_name",
                   help="class to draw (class-conditional models; default: the first class)")
    add_device(p)
    p.set_defaults(run=run_latent_grid)

    p = commands.add_parser("interpolate", help="walk the latent space between two images or seeds")
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="model folder or bundled name (default with --prompt-a/-b: the bundled text-to-image model)")
    p.add_argument("--from", dest="start",
                   help="an integer seed, or an image file to encode (VAE only: a GAN has no encoder)")
    p.add_argument("--to", dest="end",
                   help="an integer seed, or an image file to encode (VAE only)")
    p.add_argument("--prompt-a", help="text-to-image models: walk from this prompt's embedding ...")
    p.add_argument("--prompt-b", help="... to this one's (slerp; the starting noise walks from --seed to --seed-b)")
    p.add_argument("--seed", type=seed_int, default=0, help="with --prompt-a/-b: the starting noise's seed (default 0)")
    p.add_argument("--seed-b", type=seed_int, help="with --prompt-a/-b: the seed at the end of the walk (default --seed)")
    p.add_argument("--steps", type=positive_int, help="with --prompt-a/-b: sampling steps")
    p.add_argument("--sampler", help="with --prompt-a/-b: sampler name")
    p.add_argument("--cfg-scale", type=finite_float, help="with --prompt-a/-b: guidance scale")
    p.add_argument("--negative-prompt", help="with --prompt-a/-b: negative prompt")
    p.add_argument("--frames", type=int, default=8, help="pictures along the walk, ends included (default 8)")
    p.add_argument("--mode", choices=("lerp", "slerp", "both"), default="slerp",
                   help="linear, spherical, or both as two rows (default slerp)")
    p.add_argument("-o", "--out", default="interpolation.png",
                   help="strip picture to write; an animated .gif is written beside it")
    p.add_argument("--class", dest="class_name",
                   help="class to draw (class-conditional models; default: the first class)")
    add_device(p)
    p.set_defaults(run=run_interpolate)


GRID_MIN_SIDE = 256  # --grid pictures of small images are enlarged to at least this (per-image PNGs stay native)


def add_outputs(p: argparse.ArgumentParser) -> None:
    """-o/--out, --npy, --grid: where the generated images go."""
    p.add_argument("-o", "--out", help="folder for one PNG per image (default: outputs, unless --npy/--grid)")
    p.add_argument("--npy", help="also write the images as a uint8 array (N, H, W, C) to this .npy file")
    p.add_argument("--grid", help="also write all images as one grid picture to this file")


def add_sampling(p: argparse.ArgumentParser, *, n: int, steps_help: str, sampler_help: str, cfg_help: str) -> None:
    """-n, the outputs, --steps, --sampler, the sampler options and --cfg-scale."""
    p.add_argument("-n", "--num-images", type=positive_int, default=n, help=f"images to generate (default {n})")
    add_outputs(p)
    p.add_argument("--steps", type=positive_int, help=steps_help)
    p.add_argument("--sampler", help=sampler_help)
    add_sampler_options(p)
    p.add_argument("--cfg-scale", type=finite_float, help=cfg_help)
    p.add_argument("--subseed", type=seed_int, help="variation seed (sd-webui's): with --subseed-strength, every image "
                                               "keeps --seed and image i blends in the noise of subseed + i")
    p.add_argument("--subseed-strength", type=finite_float, help="variation strength, 0..1 (default 0)")
    p.add_argument("--deepcache-interval", type=int, metavar="N",
                   help="DeepCache: a full U-Net pass every N steps, only its finest level between (changes the "
                        "picture a little; default 0, off)")
    p.add_argument("--deepcache-block", type=int, metavar="K",
                   help="with --deepcache-interval: the cached steps run only the finest level's first K down "
                        "layers and the up layers after them (1: the DeepCache paper's shallowest branch, less "
                        "work; default: the whole finest level)")
    p.add_argument("--token-merging-ratio", type=finite_float, metavar="R",
                   help="sd-webui's token merging (ToMe): merge this fraction of the finest self-attention's "
                        "tokens, 0..0.9 (changes the picture a little; default 0, off)")


def add_sampler_options(p: argparse.ArgumentParser) -> None:
    """--schedule, --eta, --s-churn, --s-noise (diffusion models; ranges checked by the samplers)."""
    p.add_argument("--schedule", help="schedule type: Automatic (the sampler's default), Uniform, Karras, "
                                      "Exponential, SGM Uniform, Simple, Normal, DDIM, Beta")
    p.add_argument("--eta", type=finite_float, help="noise of ancestral/SDE samplers and DDIM, 0..1")
    p.add_argument("--s-churn", type=finite_float, help="Euler/Heun/DPM2 churn (Karras et al.), 0..100")
    p.add_argument("--s-noise", type=finite_float, help="scale of the samplers' fresh noise, 0..2")


def _next_index(folder: Path) -> int:
    numbers = [int(m.group(1)) for f in folder.glob("*.png") if (m := re.fullmatch(r"(\d{5,})", f.stem))]
    return max(numbers, default=-1) + 1


REQUEST_FLAGS = ("prompt", "negative_prompt", "class_name", "steps", "sampler", "schedule", "cfg_scale", "eta",
                 "s_churn", "s_noise", "width", "height", "clip_skip", "subseed", "subseed_strength",
                 "deepcache_interval", "deepcache_block", "token_merging_ratio",
                 "noise_schedule")  # argparse dests, request fields


def generation_request(args: argparse.Namespace, **fields):
    """genpix's one request (pipelines/request.py) from the flags the user gave, plus ``fields``."""
    from genpix.pipelines.request import GenerationRequest

    given = {k: getattr(args, k) for k in REQUEST_FLAGS if getattr(args, k, None) is not None}
    return GenerationRequest.of(n=args.num_images, seed=args.seed, **given, **fields)


def run_pipeline(pipe, request, trajectory: str | None = None):
    """Generate ``request`` (an option the model cannot honour: a one-line error naming its flag)."""
    from genpix.errors import GenpixError
    from genpix.pipelines.capabilities import UnsupportedOption

    try:
        return _run_with_progress(pipe, request, trajectory)
    except UnsupportedOption as error:
        flag = "--class" if error.option == "class_name" else "--" + error.option.replace("_", "-")
        raise GenpixError(error.named(flag)) from None


def _run_with_progress(pipe, request, trajectory: str | None):
    """With a progress bar on stderr (for pipelines with steps); optionally record the denoising
    trajectory of the first image and write it as a strip picture."""
    from tqdm import tqdm

    if not pipe.capabilities.diffusion:
        need(not trajectory, f"--trajectory needs a diffusion model; {pipe.model_name} is a {pipe.family}")
        return pipe.generate(request)
    frames: list = []
    bars: list = []  # made at the first step, so an error before it prints no empty bar
    first_chunk = -(-request.n // pipe.batch_size)

    def callback(info: dict) -> None:
        if not bars:
            bars.append(tqdm(total=info["total"], desc="sampling", unit="step", dynamic_ncols=True))
        bars[0].update(1)
        if trajectory and info["step"] <= info["total"] // max(1, first_chunk):
            frames.append((info["sigma_next"], info["x"][:1].cpu(), info["denoised"][:1].cpu()))

    try:
        out = pipe.generate(request.but(callback=callback))
    finally:
        for bar in bars:
            bar.close()
    if trajectory:
        write_trajectory(frames, trajectory)
    return out


def write_trajectory(frames: list, path: str) -> None:
    """x_t (rescaled to the data range) above the predicted x0, every k-th step, about 10 columns."""
    import torch

    from genpix.io.images import make_grid, save_png, to_pil

    k = max(1, len(frames) // 10)
    chosen = frames[k - 1 :: k]
    if chosen[-1] is not frames[-1]:
        chosen.append(frames[-1])
    # x = x0 + sigma eps in the sigma form; x / sqrt(1 + sigma^2) is the variance-preserving x_t
    noisy = [x / (1 + sigma**2) ** 0.5 for sigma, x, _ in chosen]
    denoised = [d for _, _, d in chosen]
    pictures = to_pil((torch.cat(noisy + denoised).float().clamp(-1, 1) + 1) / 2)
    save_png(make_grid(pictures, columns=len(chosen)), path,
             f"Trajectory: {len(frames)} steps, every {k}; top x_t, bottom predicted x0")
    print(f"wrote trajectory to {path}")


def write_outputs(out, args: argparse.Namespace, columns: int | None = None) -> None:
    """PNG files (numbered after any already in the folder), --npy and --grid."""
    from genpix.io.images import make_grid, save_npy, save_png

    folder = args.out or (None if (args.npy or args.grid) else "outputs")
    if folder:
        from genpix.io.atomic import check_output_folder

        folder = check_output_folder(folder, "-o/--out")
        folder.mkdir(parents=True, exist_ok=True)
        first = _next_index(folder)
        for i, (image, text) in enumerate(zip(out.images, out.infotexts)):
            save_png(image, folder / f"{first + i:05d}.png", text)
        print(f"wrote {len(out.images)} images to {folder}/{first:05d}.png ...")
    if args.npy:
        save_npy(out.tensors, args.npy)
        print(f"wrote array {tuple(out.tensors.shape[i] for i in (0, 2, 3, 1))} to {args.npy}")
    if args.grid:
        save_png(readable(make_grid(out.images, columns=columns)), args.grid, out.infotexts[0])
        print(f"wrote grid to {args.grid}")


def readable(picture, side: int = GRID_MIN_SIDE):
    """A picture of small images enlarged by a whole factor, nearest neighbour (every pixel a
    crisp square), until its shorter side is at least ``side`` pixels."""
    factor = -(-side // min(picture.size))
    return picture if factor <= 1 else picture.resize((picture.width * factor, picture.height * factor), 0)


def run_sample(args: argparse.Namespace) -> int:
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.pipelines import load_pipeline
    from genpix.pipelines.class_prior import generate_with_prior

    set_cpu_threads()
    pipe = load_pipeline(args.model, device=resolve_device(args.device))
    if args.class_name is not None and args.class_name.lower() == "all":
        return _sample_every_class(pipe, args)
    # no --class: each picture's class drawn from the prior
    out = generate_with_prior(pipe, generation_request(args), lambda part: run_pipeline(pipe, part, args.trajectory))
    write_outputs(out, args)
    return 0


def _sample_every_class(pipe, args: argparse.Namespace) -> int:
    """``--class all``: -n images of each class (the same seeds for every class), the grid one row
    per class."""
    import torch

    from genpix.errors import GenpixError
    from genpix.pipelines.output import PipelineOutput

    names = pipe.capabilities.class_names
    if not names:
        raise GenpixError(f"--class all needs a class-conditional model; {pipe.model_name} has no classes")
    outs = []
    for name in names:
        args.class_name = name
        outs.append(run_pipeline(pipe, generation_request(args)))
    out = PipelineOutput([im for o in outs for im in o.images], torch.cat([o.tensors for o in outs]),
                         [t for o in outs for t in o.infotexts], {"classes": list(names)})
    write_outputs(out, args, columns=args.num_images)
    return 0


def _interpolate_prompts(args: argparse.Namespace, device) -> int:
    """``interpolate MODEL --prompt-a A --prompt-b B``: the strip and GIF of a walk between prompts."""
    from genpix.io.images import make_grid, save_gif, save_png
    from genpix.pipelines import load_pipeline
    from genpix.pipelines.prompt_interpolation import interpolate_prompts

    need(args.prompt_a is not None and args.prompt_b is not None, "give both --prompt-a and --prompt-b")
    need(args.start is None and args.end is None, "--from/--to walk latent points; leave them out with --prompt-a/-b")
    from genpix.pipelines.models import DEFAULT_TEXT_MODEL

    pipe = load_pipeline(args.model or DEFAULT_TEXT_MODEL, device=device)
    options = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("cfg_scale", args.cfg_scale),
                                 ("negative_prompt", args.negative_prompt)) if v is not None}
    out = interpolate_prompts(pipe, args.prompt_a, args.prompt_b, args.frames, seed_a=args.seed,
                              seed_b=args.seed_b, **options)
    path = Path(args.out)
    save_png(make_grid(out.images, columns=args.frames), path,
             f"Prompt walk: {args.prompt_a} -> {args.prompt_b}, Frames: {args.frames}, Seeds: {args.seed}, "
             f"{args.seed if args.seed_b is None else args.seed_b}")
    gif = path.with_suffix(".gif")
    save_gif([im.resize((im.width * 4, im.height * 4), 0) for im in out.images], gif)
    print(f"wrote {path} and {gif}")
    return 0


def _load_vae(model: str, device):
    """(model folder, VAE) for commands that need the encoder too (reconstruct)."""
    from genpix.errors import GenpixError
    from genpix.io.checkpoint import read_model_dir
    from genpix.pipelines.models import load_vae, resolve_model

    model_dir = read_model_dir(resolve_model(model))
    if model_dir.family != "vae":
        raise GenpixError(f"{model}: this command needs a model with an encoder (vae), not {model_dir.family}")
    return model_dir, load_vae(model_dir).to(device)


def _load_latent_model(model: str, device):
    """(model folder, LatentDecoderPipeline) of a VAE or GAN; other families are a one-line error."""
    from genpix.io.checkpoint import read_model_dir
    from genpix.pipelines.models import load_latent_decoder, resolve_model

    model_dir = read_model_dir(resolve_model(model))
    return model_dir, load_latent_decoder(model_dir, device)


def _class_labels(pipe, name: str | None, n: int):
    """Labels (n,) of class ``name`` (default the first) for a class-conditional model, else None."""
    import torch

    if pipe.class_names is None:
        if name:
            pipe.class_index(name)  # the one-line "not class-conditional" error
        return None
    return torch.full((n,), pipe.class_index(name) if name else 0, dtype=torch.long)


def run_latent_grid(args: argparse.Namespace) -> int:
    import torch

    from genpix.data import load_dataset
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.pipelines.latent_grid import LatentPlane, latent_grid

    set_cpu_threads()
    device = resolve_device(args.device)
    model_dir, pipe = _load_latent_model(args.model, device)
    latent_dim = pipe.latent_dim
    dims = args.dims or ("0,1" if latent_dim == 2 else "pca" if pipe.encode else "random")
    if dims == "pca":
        need(pipe.encode is not None, f"--dims pca needs a model with an encoder, and a {pipe.family} "
                                      f"has none: use --dims random or --dims i,j")
        data_info = model_dir.config.get("data", {})
        spec = args.data or data_info.get("spec")
        need(spec is not None, "--dims pca needs images to encode: pass --data")
        model = model_dir.config["model"]
        data = load_dataset(spec, split="test", image_size=model["image_size"],
                            channels=model["channels"], limit=2000)
        with torch.no_grad():
            codes = pipe.encode(data.images.float().div(255).to(device)).cpu()
        plane = LatentPlane.principal(codes)
    elif dims == "random":
        need(latent_dim >= 2, f"--dims random needs a latent of 2 or more dimensions, not {latent_dim}")
        plane = LatentPlane.random(latent_dim, args.seed)
    else:
        parts = dims.split(",")
        need(len(parts) == 2 and all(p.strip().isdigit() for p in parts),
             f"--dims must be 'i,j', 'pca' or 'random', got {dims!r}")
        i, j = (int(p) for p in parts)
        need(i != j and max(i, j) < latent_dim,
             f"--dims {dims}: need two different dimensions below {latent_dim}")
        plane = LatentPlane.axes(latent_dim, (i, j))
    need(args.extent > 0, f"--range must be positive, got {args.extent}")
    _class_labels(pipe, args.class_name, 1)  # an unknown class fails before any decoding
    picture = latent_grid(lambda z: pipe.decode_latents(z, _class_labels(pipe, args.class_name, len(z))),
                          plane, n=args.size, extent=args.extent)
    from genpix.io.atomic import write_atomic

    write_atomic(args.out, lambda p: picture.save(p, format="PNG"))
    print(f"wrote {args.size}x{args.size} latent grid to {args.out}")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    import torch

    from genpix.data import load_image_file
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.io.images import make_grid, save_gif, save_png, to_pil
    from genpix.pipelines.interpolation import interpolate
    from genpix.pipelines.latent_decoder import seeded_normal

    set_cpu_threads()
    need(args.frames >= 2, f"--frames must be at least 2, got {args.frames}")
    device = resolve_device(args.device)
    if args.prompt_a is not None or args.prompt_b is not None:
        return _interpolate_prompts(args, device)
    need(args.start is not None and args.end is not None,
         "give --from and --to (seeds or images), or --prompt-a and --prompt-b (text-to-image models)")
    need(args.model is not None, "give the MODEL to walk (a VAE or GAN folder, or a bundled name)")
    model_dir, pipe = _load_latent_model(args.model, device)
    model = model_dir.config["model"]

    def point(value: str) -> torch.Tensor:
        if value.lstrip("-").isdigit():
            return seeded_normal((pipe.latent_dim,), [int(value)])[0]
        need(pipe.encode is not None, f"{value!r}: a {pipe.family} model cannot encode images (it has "
                                      f"no encoder); give integer seeds to --from and --to")
        image = load_image_file(value, image_size=model["image_size"], channels=model["channels"])
        with torch.no_grad():
            return pipe.encode(torch.from_numpy(image)[None].float().div(255).to(device))[0].cpu()

    z0, z1 = point(args.start), point(args.end)
    labels = _class_labels(pipe, args.class_name, args.frames)
    modes = ("lerp", "slerp") if args.mode == "both" else (args.mode,)
    rows = [to_pil(pipe.decode_latents(interpolate(z0, z1, args.frames, mode), labels)) for mode in modes]
    strip = make_grid([im for row in rows for im in row], columns=args.frames)
    out = Path(args.out)
    save_png(strip, out, f"Interpolation: {args.mode}, Frames: {args.frames}, From: {args.start}, To: {args.end}")
    gif = out.with_suffix(".gif")
    save_gif([im.resize((im.width * 4, im.height * 4), 0) for im in rows[-1]], gif)
    print(f"wrote {out} and {gif}")
    return 0
