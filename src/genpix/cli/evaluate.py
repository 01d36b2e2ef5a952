"""``genpix eval``: how close generated images are to real ones; ``genpix eval train-features``.

One parser serves both: ``eval`` takes its options directly (``genpix eval --real ... --fake ...``)
and has one optional sub-command, ``train-features``, whose options follow its name.
"""

from __future__ import annotations

import argparse
import json

from genpix.cli.common import add_device, add_seed, finite_float, need, positive_int


def register(commands) -> None:
    p = commands.add_parser(
        "eval", help="Fréchet distance, KID, precision/recall, IS and class coverage of generated images",
        description="Compare generated images with real ones. Figures on domain features (the default) "
                    "are not comparable to Inception FID; --features inception gives pytorch-fid's FID.")
    p.add_argument("--real", metavar="SPEC", help="real images: DATASET[:SPLIT] (e.g. fashion-mnist:test), "
                   "a folder, or a .npy array")
    p.add_argument("--fake", metavar="SPEC", help="generated images: a folder, a .npy array (as `genpix sample "
                   "--npy` writes), or a MODEL (folder or bundled name) to sample from")
    p.add_argument("-n", "--num-images", type=positive_int, default=10000,
                   help="use at most this many images of each side; a MODEL generates this many (default 10000)")
    p.add_argument("--features", default="domain", metavar="NAME",
                   help="domain (the classifier trained by `genpix eval train-features` for the --real dataset; "
                        "default), domain:FILE, inception, or torchscript:PATH")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: the torch hub cache)")
    p.add_argument("--download-inception", action="store_true",
                   help="download the Inception weights when missing (SHA-256 checked)")
    p.add_argument("--inception-url", help=argparse.SUPPRESS)  # a mirror or a local file:// (tests)
    p.add_argument("--json", metavar="FILE", help="also write the figures to this JSON file")
    p.add_argument("--steps", type=positive_int, help="sampling steps when --fake is a diffusion MODEL")
    p.add_argument("--sampler", help="sampler name when --fake is a diffusion MODEL")
    p.add_argument("--cfg-scale", type=finite_float, help="classifier-free guidance scale when --fake is a MODEL")
    p.add_argument("--class", dest="class_name", help="class when --fake is a class-conditional MODEL (null: the "
                   "null class; default: each image's class drawn from the uniform prior)")
    p.add_argument("--kid-subsets", type=positive_int, default=100, help="KID subsets (default 100)")
    p.add_argument("--kid-subset-size", type=positive_int, default=1000, help="KID subset size (default 1000)")
    p.add_argument("--nearest-k", type=positive_int, default=3, help="k of precision/recall (default 3)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per feature batch (default 100)")
    add_seed(p)
    add_device(p)
    p.set_defaults(run=run_eval)

    sub = p.add_subparsers(dest="eval_command", metavar="{train-features}")
    t = sub.add_parser("train-features", help="train the domain feature network for a labelled dataset",
                       description="Train a small CNN classifier on a labelled dataset; its penultimate layer "
                                   "gives `genpix eval --features domain` its features (domain features, not "
                                   "comparable to Inception FID).")
    t.add_argument("--data", required=True, metavar="SPEC", help="labelled dataset (e.g. fashion-mnist) or folder "
                   "with one sub-folder per class")
    t.add_argument("--steps", dest="train_steps", type=positive_int, default=1500, help="training steps (default 1500)")
    t.add_argument("--batch-size", dest="train_batch_size", type=positive_int, default=128,
                   help="images per step (default 128)")
    t.add_argument("--out", metavar="FILE", help="weights file (.safetensors, with a .json beside it; default: "
                   "genpix's cache, where --features domain finds it)")
    add_seed(t)
    add_device(t)
    t.set_defaults(run=run_train_features)


def run_eval(args: argparse.Namespace) -> int:
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.eval.features import load_extractor
    from genpix.eval.inputs import load_image_set
    from genpix.eval.report import EvalOptions, evaluate
    from genpix.io.atomic import write_atomic

    need(args.real and args.fake, "genpix eval needs --real SPEC and --fake SPEC "
                                  "(or: genpix eval train-features --data DATASET)")
    set_cpu_threads()
    device = resolve_device(args.device)
    real = load_image_set(args.real, args.num_images, device=device)
    extractor = load_extractor(args.features, dataset=real.dataset or args.real, device=device,
                               inception_weights=args.inception_weights, download=args.download_inception,
                               inception_url=args.inception_url)
    fake = load_image_set(args.fake, args.num_images, device=device, seed=args.seed, steps=args.steps,
                          sampler=args.sampler, cfg_scale=args.cfg_scale, class_name=args.class_name)
    options = EvalOptions(kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, k=args.nearest_k,
                          batch_size=args.batch_size, seed=args.seed)
    report = evaluate(real, fake, extractor, options)
    print(report.table())
    if args.json:
        text = json.dumps(report.to_json(), indent=2) + "\n"
        write_atomic(args.json, lambda p: p.write_text(text, encoding="utf-8"))
        print(f"wrote {args.json}")
    return 0


def run_train_features(args: argparse.Namespace) -> int:
    from genpix.device import resolve_device, set_cpu_threads
    from genpix.eval.features import default_domain_path
    from genpix.eval.features.domain import NOTE, DomainTrainConfig, train_and_save

    set_cpu_threads()
    out = args.out or default_domain_path(args.data)
    config = DomainTrainConfig(steps=args.train_steps, batch_size=args.train_batch_size, seed=args.seed or 0)
    print(f"training domain features on {args.data} for {config.steps} steps ({NOTE})")
    path, info = train_and_save(args.data, out, config, resolve_device(args.device),
                                progress=lambda step, loss: print(f"step {step}/{config.steps} loss {loss:.4f}"))
    print(f"test accuracy {info['test_accuracy']:.4f} after {info['train_seconds']} s; wrote {path} "
          f"and {path.with_suffix('.json').name} ({NOTE})")
    return 0
