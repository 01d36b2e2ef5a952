"""``genpix report``: the generative trilemma on this machine (see genpix/eval/trilemma.py).

Trains each family with ``genpix train`` for the same wall-clock budget (its steps set from a timing
of its training step), samples it (the diffusion model with several samplers and step counts),
measures quality, speed and coverage on the domain features, and writes a Markdown report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from genpix.cli.common import add_device, add_seed, finite_float, need, positive_int


def _sampler_steps(text: str) -> tuple[str, int]:
    name, _, steps = text.rpartition(":")
    if not name or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected SAMPLER:STEPS such as 'DDIM:10', got {text!r}")
    return name, int(steps)


def register(commands) -> None:
    from genpix.eval.trilemma import FAMILIES, ReportConfig

    d = ReportConfig()
    p = commands.add_parser("report", help="the generative trilemma: VAE, DCGAN and DDPM for one CPU budget",
                            description="Train VAE, DCGAN and DDPM on a labelled dataset for the same wall-clock "
                                        "budget each, then write a Markdown report of quality (Fréchet distance "
                                        "on domain features), sampling speed and coverage (recall, class entropy) "
                                        "with a plot and sample grids.")
    p.add_argument("--data", default=d.data, help=f"a labelled dataset (default {d.data})")
    p.add_argument("--family", action="append", choices=FAMILIES, dest="families",
                   help="a family to include; repeat for several (default: all)")
    p.add_argument("--budget-s", type=finite_float, default=d.budget_s,
                   help=f"training seconds per family (default {d.budget_s:g})")
    p.add_argument("--max-steps", type=positive_int, help="cap on each family's training steps")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"training batch (default {d.batch_size})")
    p.add_argument("--limit", type=positive_int, help="use only the first N training images")
    p.add_argument("-n", "--num-images", type=positive_int, default=d.num_images,
                   help=f"images generated per model and real test images compared (default {d.num_images})")
    p.add_argument("--diffusion", action="append", type=_sampler_steps, metavar="SAMPLER:STEPS",
                   help="a diffusion sampler row, e.g. 'DPM++ 2M:10'; repeat for several (default: "
                        + ", ".join(f"{n}:{s}" for n, s in d.diffusion) + ")")
    p.add_argument("--features", default="domain", help="domain (default; `genpix eval train-features` first), "
                   "domain:FILE, inception or torchscript:PATH")
    p.add_argument("--runs-dir", default="runs/report", help="where the models are trained (default runs/report)")
    p.add_argument("-o", "--out", default="docs/report.md", help="the Markdown report (default docs/report.md); "
                   "its pictures go to a folder beside it")
    p.add_argument("--json", metavar="FILE", help="also write the rows to this JSON file")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: GENPIX_THREADS or every CPU)")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_report)


def _train_steps(family: str, config, image_size: int, channels: int, device) -> int:
    """Steps that fit ``config.budget_s``, from two timed training steps on random images."""
    from genpix.eval.bench import BenchConfig, make_task, time_training

    timing_config = BenchConfig(families=(family,), image_size=image_size, channels=channels,
                                batch_size=config.batch_size, train_steps=2, repeats=1, diffusers=False,
                                seed=config.seed)
    seconds_per_step = time_training(make_task(family, timing_config, device), timing_config, device).median_s / 2
    steps = max(1, int(config.budget_s / seconds_per_step))
    return min(steps, config.max_steps) if config.max_steps else steps


def run_report(args: argparse.Namespace) -> int:
    import torch

    from genpix.cli import main as genpix
    from genpix.data import DATASETS, load_dataset
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.eval.features import load_extractor
    from genpix.eval.inputs import load_image_set
    from genpix.eval.report import EvalOptions, evaluate
    from genpix.eval.trilemma import ReportConfig, Row, images_dir, write_report
    from genpix.io.atomic import write_atomic
    from genpix.io.images import make_grid, to_pil

    need(args.data in DATASETS, f"genpix report needs a named dataset with a test split ({', '.join(DATASETS)}), "
                                f"got {args.data!r}")
    config = ReportConfig(data=args.data, families=tuple(dict.fromkeys(args.families or ReportConfig().families)),
                          budget_s=args.budget_s, batch_size=args.batch_size, limit=args.limit,
                          num_images=args.num_images, diffusion=tuple(args.diffusion or ReportConfig().diffusion),
                          max_steps=args.max_steps, seed=args.seed)
    runs = Path(args.runs_dir)
    taken = [str(runs / f) for f in config.families if (runs / f / "config.json").exists()]
    need(not taken, f"{', '.join(taken)} already hold a trained model: pass another --runs-dir")
    threads = set_cpu_threads(args.threads)
    device = resolve_device(args.device)
    extractor = load_extractor(args.features, dataset=config.data, device=device)  # fails before any training
    real = load_image_set(f"{config.data}:test", config.num_images)
    options = EvalOptions(kid_subsets=10, kid_subset_size=config.num_images, seed=config.seed)
    reference = evaluate(real, load_image_set(f"{config.data}:train", config.num_images), extractor, options).metrics
    sample = load_dataset(config.data, split="train", limit=1)
    out, pictures = Path(args.out), images_dir(args.out)
    rows: list[Row] = []
    for family in config.families:
        steps = _train_steps(family, config, sample.image_size, sample.channels, device)
        run_dir = runs / family
        print(f"{family}: training {steps} steps (budget {config.budget_s:g} s) into {run_dir}", flush=True)
        tic = time.perf_counter()
        status = genpix(["train", family, "--data", config.data, "--steps", str(steps), "--batch-size",
                         str(config.batch_size), "--out", str(run_dir), "--quiet", "--seed", str(config.seed),
                         "--sample-every", str(steps), "--checkpoint-every", str(steps), "--device", str(device),
                         *(["--limit", str(config.limit)] if config.limit else [])])
        need(status == 0, f"training {family} failed (see above)")
        train_s = time.perf_counter() - tic
        for sampler, options_ in config.ways(family):
            tic = time.perf_counter()
            fake = load_image_set(str(run_dir), config.num_images, device=device, seed=config.seed, **options_)
            ms = 1000 * (time.perf_counter() - tic) / config.num_images
            grid = f"{family}-{sampler}".replace(" ", "-").replace("(", "").replace(")", "") + ".png"
            pictures.mkdir(parents=True, exist_ok=True)
            make_grid(to_pil(fake.images[:64].float() / (255 if fake.images.dtype == torch.uint8 else 1))).save(
                pictures / grid)
            metrics = evaluate(real, fake, extractor, options).metrics
            rows.append(Row(family, sampler, steps, train_s, ms, metrics, f"{pictures.name}/{grid}"))
            print(f"  {rows[-1].label}: Fréchet distance {metrics['fid']:.3f}, recall {metrics['recall']}, "
                  f"{ms:.2f} ms/image", flush=True)
    info = {"features": extractor.name, "note": extractor.note,
            "machine": f"torch {torch.__version__} on {device}, {threads} threads"}
    write_report(out, config, rows, reference, info)
    print(f"wrote {out} and {pictures}/")
    if args.json:
        data = {"config": {**config.__dict__}, "info": info, "reference": reference,
                "rows": [{**r.__dict__, "label": r.label} for r in rows]}
        text = json.dumps(data, indent=2, default=list) + "\n"
        write_atomic(args.json, lambda p: p.write_text(text, encoding="utf-8"))
    return 0
