"""``genpix datasets``, ``models``, ``samplers`` and ``reconstruct``."""

from __future__ import annotations

import argparse

from genpix.cli.common import add_device, positive_int


def register(commands) -> None:
    p = commands.add_parser("datasets", help="list the datasets --data accepts")
    p.set_defaults(run=run_datasets)
    p = commands.add_parser("models", help="list the bundled models")
    p.set_defaults(run=run_models)
    p = commands.add_parser("samplers", help="list the samplers (--sampler), their aliases, default schedules "
                                             "and options, and the schedule types (--schedule)")
    p.set_defaults(run=run_samplers)
    p = commands.add_parser("reconstruct", help="PSNR and SSIM of a VAE's reconstructions of held-out images")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--data", help="dataset or folder (default: the model's dataset)")
    p.add_argument("--split", choices=("train", "test", "all"), default="test")
    p.add_argument("-n", "--num-images", type=positive_int, default=10000, help="at most this many images")
    p.add_argument("-o", "--out", help="also write a picture: originals above their reconstructions")
    add_device(p)
    p.set_defaults(run=run_reconstruct)


def run_datasets(args: argparse.Namespace) -> int:
    from genpix.data import list_datasets

    for name, description in list_datasets():
        print(f"{name:15s} {description}")
    print(f"{'FOLDER':15s} any folder of images (jpg, png, webp, bmp, gif), searched recursively")
    return 0


def run_models(args: argparse.Namespace) -> int:
    import json

    from genpix.pipelines.models import bundled_models

    models = bundled_models()
    if not models:
        print("no bundled models installed")
    for name, path in models.items():
        config = json.loads((path / "config.json").read_text())
        data = config.get("data", {})
        print(f"{name:20s} {config['family']:6s} {data.get('spec', '?')} "
              f"{data.get('image_size', '?')}px, trained {config.get('step', '?')} steps")
    return 0


def run_samplers(args: argparse.Namespace) -> int:
    from genpix.diffusion import samplers, schedules

    print(f"{'SAMPLER':19s} {'DEFAULT SCHEDULE':17s} {'OPTIONS':34s} ALIASES")
    for entry in samplers.SAMPLER_INFO.values():
        print(f"{entry.name:19s} {schedules.SCHEDULE_LABELS[entry.default_schedule]:17s} "
              f"{', '.join(entry.options) or '-':34s} {', '.join(entry.aliases)}")
    print(f"\nschedule types: {', '.join(schedules.SCHEDULE_LABELS.values())} "
          f"(Automatic: the sampler's default)")
    print("a schedule type may follow a sampler name, as in sd-webui before 1.9: 'DPM++ 2M Karras'")
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from genpix.cli.generate import _load_vae
    from genpix.data import load_dataset
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.io.images import make_grid, save_png, to_pil
    from genpix.training.vae import reconstruction_metrics

    set_cpu_threads()
    device = resolve_device(args.device)
    model_dir, vae = _load_vae(args.model, device)
    spec = args.data or model_dir.config.get("data", {}).get("spec")
    data = load_dataset(spec, split=args.split, image_size=vae.config.image_size,
                        channels=vae.config.channels, limit=args.num_images)
    metrics = reconstruction_metrics(vae, data, device)
    print(f"{spec} ({args.split}, {metrics['images']} images): PSNR {metrics['psnr']:.2f} dB, "
          f"SSIM {metrics['ssim']:.4f}")
    if args.out:
        x = data.images[:8].float().div(255).to(device)
        with torch.no_grad():
            pictures = to_pil(torch.cat([x, vae.reconstruct(x)]).cpu())
        save_png(make_grid(pictures, columns=8), args.out)
        print(f"wrote {args.out}")
    return 0
