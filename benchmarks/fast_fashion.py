"""1000 class-balanced fashion-ddpm images: which fast settings keep DDIM 50's quality in 30 s.

For the reference settings (DDIM 50 steps) and each candidate, ``-n`` class-balanced images
(``-n / 10`` per class; class c's image i from seed ``--seed + 1000 c + i``, so every setting starts
from the same noise) are made with the public API, ``pipe(n=..., class_name=c, seed=...)``, one call
per class. The wall clock covers those calls only: the model is loaded and each setting warmed up (a
2-step call of the same shapes) before it starts. The judge is genpix's own: the Fréchet distance on
domain features (`genpix eval train-features`) to ``--real`` test images, and the share of images the
same domain classifier reads as the class asked for. A candidate passes when its time for 1000 images
(scaled from ``-n``) is at most ``--budget-s`` and its FD at most ``--tolerance`` times the best
reference FD. Usage:

    genpix eval train-features --data fashion-mnist      # once: the judge's network
    GENPIX_THREADS=2 python benchmarks/fast_fashion.py --json fast_fashion.json

A setting is ``SAMPLER:STEPS`` with ``:cfg=F`` (default 1: one network pass per step), ``:batch=N``
(images per network batch; at most ``-n / 10`` take effect, one call per class), ``:schedule=NAME``
and ``:deepcache=N`` (pipelines/fast.py) appended, e.g. ``"DPM++ 2M:8:cfg=1.5:batch=50"``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass

import torch
from sampling_args import write_json

import genpix
from genpix.device import set_cpu_threads
from genpix.diffusion import samplers
from genpix.errors import GenpixError
from genpix.eval.features import extract, load_extractor
from genpix.eval.inputs import load_image_set
from genpix.metrics.frechet import feature_statistics, frechet_distance_stats

REFERENCES = ("DDIM:50", "DDIM:50:cfg=3")  # genpix's default for this model is DDIM 50 at CFG 3
CANDIDATES = ("DPM++ 2M:6", "DPM++ 2M:8", "DPM++ 2M:10", "DPM++ 2M:8:batch=50", "DPM++ 2M:10:deepcache=2",
              "DPM++ 2M:6:cfg=1.5", "DPM++ 2M SDE:10", "UniPC:8", "DPM2:4")
SEEDS_PER_CLASS = 1000  # class c's seeds start at seed + 1000 c


@dataclass(frozen=True)
class Setting:
    """One way to sample: sampler, steps, guidance, batch and the less-work switches."""

    sampler: str
    steps: int
    cfg_scale: float = 1.0
    batch_size: int | None = None  # None: --batch-size
    schedule: str | None = None  # None: the sampler's own
    deepcache_interval: int = 0

    @property
    def label(self) -> str:
        extras = [f"cfg {self.cfg_scale:g}" if self.cfg_scale != 1 else "",
                  f"batch {self.batch_size}" if self.batch_size else "",
                  self.schedule or "", f"DeepCache {self.deepcache_interval}" if self.deepcache_interval else ""]
        return f"{self.sampler} {self.steps}" + "".join(f", {e}" for e in extras if e)

    def fields(self, steps: int | None = None) -> dict:
        """The pipeline call's fields (``steps`` in place of the setting's own, for the warm-up)."""
        return {"sampler": self.sampler, "steps": steps or self.steps, "cfg_scale": self.cfg_scale,
                "schedule": self.schedule, "deepcache_interval": self.deepcache_interval}


OPTIONS = {"cfg": ("cfg_scale", float), "batch": ("batch_size", int), "schedule": ("schedule", str),
           "deepcache": ("deepcache_interval", int)}


def parse_setting(text: str) -> Setting:
    """``SAMPLER:STEPS[:KEY=VALUE...]`` -> Setting, its sampler, schedule and steps checked
    before anything is sampled (argparse reports a bad one in one line)."""
    sampler, _, rest = text.partition(":")
    steps, *options = rest.split(":")
    values = {}
    try:
        for option in options:
            key, _, value = option.partition("=")
            field, kind = OPTIONS[key]
            values[field] = kind(value)
        setting = Setting(sampler.strip(), int(steps), **values)
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: a setting is SAMPLER:STEPS[:KEY=VALUE...], KEY one of "
                                         f"{', '.join(OPTIONS)}") from None
    try:
        samplers.resolve(setting.sampler, setting.schedule)
        samplers.check_steps(setting.steps)
    except GenpixError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return setting


def sample_balanced(pipe, setting: Setting, per_class: int, seed: int, batch_size: int) -> tuple[torch.Tensor, float]:
    """``per_class`` images (float (N, C, H, W) in [0, 1]) of every class in class order, and the
    seconds their pipeline calls took after a warm-up of the same shapes."""
    pipe.batch_size = setting.batch_size or batch_size
    pipe(n=per_class, seed=seed, class_name=0, **setting.fields(steps=min(setting.steps, 2)))  # warm-up
    tic = time.perf_counter()
    images = [pipe(n=per_class, seed=seed + SEEDS_PER_CLASS * c, class_name=c, **setting.fields()).tensors
              for c in range(len(pipe.class_names))]
    return torch.cat(images), time.perf_counter() - tic


def judge(extractor, real_stats, images: torch.Tensor, labels: list[str]) -> dict:
    """FD to the real images' statistics and the class accuracy of the domain classifier."""
    got = extract(extractor, images, extractor.channels, extractor.image_size)
    predicted = [extractor.class_names[i] for i in got.probs.argmax(1).tolist()]
    return {"fd": frechet_distance_stats(real_stats, feature_statistics(got.features)),
            "class_accuracy": sum(p == y for p, y in zip(predicted, labels)) / len(labels)}


def measure(args, pipe, extractor, real_stats, setting: Setting) -> dict:
    per_class = args.n // len(pipe.class_names)
    images, seconds = sample_balanced(pipe, setting, per_class, args.seed, args.batch_size)
    labels = [name for name in pipe.class_names for _ in range(per_class)]
    row = {"setting": setting.label, **asdict(setting), "batch_size": pipe.batch_size, "images": len(images),
           "seconds": seconds, "seconds_per_1000": 1000 * seconds / len(images),
           **judge(extractor, real_stats, images, labels)}
    print(f"  {row['setting']}: {row['seconds_per_1000']:.1f} s/1000, FD {row['fd']:.2f}", flush=True)
    return row


def verdicts(references: list[dict], candidates: list[dict], budget_s: float, tolerance: float) -> float:
    """Adds ratio and pass to every row; returns the bar's reference FD (the best reference's)."""
    best = min(r["fd"] for r in references)
    for row in references + candidates:
        row["ratio"] = row["fd"] / best
        row["pass"] = row["seconds_per_1000"] <= budget_s and row["fd"] <= tolerance * best
    return best


def print_table(result: dict) -> None:
    print(f"\n{result['model']}: {result['n']} class-balanced images per setting, {result['threads']} threads; "
          f"FD on {result['features']} to {result['real_images']} {result['real']} images; pass: "
          f"<= {result['budget_s']:g} s per 1000 and FD <= {result['tolerance']:.2f} x {result['reference_fd']:.2f}\n")
    print("| setting | s / 1000 images | FD | x reference | class accuracy | pass |")
    print("|---|---|---|---|---|---|")
    for kind in ("references", "candidates"):
        for row in result[kind]:
            verdict = "reference" if kind == "references" else ("yes" if row["pass"] else "no")
            print(f"| {row['setting']} | {row['seconds_per_1000']:.1f} | {row['fd']:.2f} | {row['ratio']:.2f} | "
                  f"{row['class_accuracy']:.3f} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion-ddpm")
    parser.add_argument("-n", type=int, default=1000, help="images per setting, split evenly over the classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100, help="for settings without batch=")
    parser.add_argument("--reference", nargs="+", type=parse_setting, default=[parse_setting(s) for s in REFERENCES],
                        help=f"SAMPLER:STEPS[:cfg=F][:batch=N][:schedule=S][:deepcache=N]; the bar is the best's FD "
                             f"(default: {' '.join(map(repr, REFERENCES))})")
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=[parse_setting(s) for s in CANDIDATES],
                        help=f"the candidates, as --reference (default: {' '.join(map(repr, CANDIDATES))})")
    parser.add_argument("--real", default="fashion-mnist:test")
    parser.add_argument("--real-n", type=int, default=1000)
    parser.add_argument("--data", default="fashion-mnist", help="dataset of the domain feature network")
    parser.add_argument("--features", default="domain", help="domain or domain:FILE (with class logits)")
    parser.add_argument("--budget-s", type=float, default=30.0, help="seconds for 1000 images")
    parser.add_argument("--tolerance", type=float, default=1.10, help="largest FD / best reference FD")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    threads = set_cpu_threads()
    pipe = genpix.load_pipeline(args.model)
    classes = len(pipe.class_names)
    if not classes or args.n % classes or not 0 < args.n // classes <= SEEDS_PER_CLASS:
        parser.error(f"-n must be a multiple of the model's {classes} classes, at most {SEEDS_PER_CLASS} each")
    extractor = load_extractor(args.features, dataset=args.data)
    if extractor.class_names is None:
        parser.error(f"--features {args.features} has no class logits (domain features have)")
    real = load_image_set(args.real, limit=args.real_n)
    real_stats = feature_statistics(extract(extractor, real.images, extractor.channels, extractor.image_size).features)
    rows = {kind: [measure(args, pipe, extractor, real_stats, s) for s in settings]
            for kind, settings in (("references", args.reference), ("candidates", args.settings))}
    best = verdicts(rows["references"], rows["candidates"], args.budget_s, args.tolerance)
    result = {"model": args.model, "n": args.n, "seed": args.seed, "threads": threads, "real": args.real,
              "real_images": len(real.images), "features": extractor.name, "budget_s": args.budget_s,
              "tolerance": args.tolerance, "reference_fd": best, **rows}
    print_table(result)
    write_json(result, args.json)


if __name__ == "__main__":
    main()
