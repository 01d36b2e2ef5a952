"""``genpix bench``: training and sampling speed per family and sampler, and the U-Net against diffusers."""

from __future__ import annotations

import argparse
import json

from genpix.cli.common import add_device, add_seed, positive_int


def register(commands) -> None:
    from genpix.eval.bench import BenchConfig, FAMILIES

    d = BenchConfig()
    p = commands.add_parser(
        "bench", help="training images/s, sampling ms/image and peak memory per family; U-Net vs diffusers",
        description="Time each family's training step and sampling on random images at one size (medians of "
                    "repeated windows after a warm-up), and genpix's U-Net against diffusers' UNet2DModel "
                    "with the same blocks in the same run.")
    p.add_argument("--family", action="append", choices=FAMILIES, dest="families",
                   help=f"a family to time; repeat for several (default: all of {', '.join(FAMILIES)})")
    p.add_argument("--sampler", action="append", dest="samplers", metavar="NAME",
                   help="a diffusion sampler to time, e.g. DDIM; repeat for several (default: every one)")
    p.add_argument("--image-size", type=positive_int, default=d.image_size, help=f"H = W (default {d.image_size})")
    p.add_argument("--channels", type=int, choices=(1, 3), default=d.channels, help="1 = grayscale, 3 = RGB")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"images per training step (default {d.batch_size})")
    p.add_argument("--train-steps", type=positive_int, default=d.train_steps,
                   help=f"training steps per timed window (default {d.train_steps})")
    p.add_argument("-n", "--sample-n", type=positive_int, default=d.sample_n,
                   help=f"images per sampling window (default {d.sample_n})")
    p.add_argument("--steps", type=positive_int, default=d.sampling_steps,
                   help=f"diffusion sampling steps (default {d.sampling_steps})")
    p.add_argument("--preset", default=d.preset, help=f"ddpm U-Net preset (default {d.preset})")
    p.add_argument("--repeats", type=positive_int, default=d.repeats,
                   help=f"timed windows per figure, reported as their median (default {d.repeats})")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: GENPIX_THREADS or every CPU)")
    p.add_argument("--no-diffusers", action="store_true", help="skip the U-Net comparison with diffusers")
    p.add_argument("--json", metavar="FILE", help="also write every figure to this JSON file")
    p.add_argument("--update-docs", metavar="FILE", help="rewrite the generated table between the "
                   "'genpix bench' markers in this Markdown file (e.g. docs/benchmarks.md)")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.eval.bench import FAMILIES, BenchConfig, run_bench as measure, summary_lines
    from genpix.eval.bench_docs import update_markdown
    from genpix.io.atomic import write_atomic

    set_cpu_threads(args.threads)
    device = resolve_device(args.device)
    config = BenchConfig(families=tuple(dict.fromkeys(args.families or FAMILIES)), image_size=args.image_size,
                         channels=args.channels, batch_size=args.batch_size, train_steps=args.train_steps,
                         sample_n=args.sample_n, sampling_steps=args.steps,
                         samplers=tuple(args.samplers) if args.samplers else None, preset=args.preset,
                         repeats=args.repeats, diffusers=not args.no_diffusers, seed=args.seed)
    result = measure(config, device, progress=lambda what: print(f"timing {what} ...", flush=True))
    print("\n".join(summary_lines(result)))
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        write_atomic(args.json, lambda p: p.write_text(text, encoding="utf-8"))
        print(f"wrote {args.json}")
    if args.update_docs:
        update_markdown(args.update_docs, result)
        print(f"updated the genpix bench tables in {args.update_docs}")
    return 0
