"""``genpix train FAMILY``: one command shape for every family of the training registry
(training/families.py). The data, run and distributed flags live here; the TrainConfig flags and each
family's own are derived from their config dataclasses (training/flags.py)."""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

from genpix.cli.common import add_device, finite_float, need, positive_int
from genpix.config import from_dict
from genpix.errors import GenpixError
from genpix.training.families import Family, families
from genpix.training.flags import Flag, config_flags, given


TRAIN_HELP = {
    "steps": "optimiser steps in all",
    "batch_size": "images per step in all; with several processes (torchrun, --nproc) the global batch, "
                  "split evenly over them",
    "lr": "learning rate", "lr_schedule": "decay after the warm-up", "warmup_steps": "linear warm-up steps",
    "seed": "random seed", "log_every": "steps per log.jsonl line", "sample_every": "steps between sample grids",
    "checkpoint_every": "steps between checkpoints", "keep_checkpoints": "resumable checkpoints to keep",
}


def train_flags(family: Family) -> list[Flag]:
    """The TrainConfig flags, showing this family's defaults."""
    from genpix.training.trainer import TrainConfig

    return config_flags(TrainConfig, TRAIN_HELP, defaults=family.train_values())


def register(commands) -> None:
    train = commands.add_parser("train", help="train a generator on a dataset or an image folder")
    kinds = train.add_subparsers(dest="family", metavar="FAMILY")
    kinds.required = True
    for family in families().values():
        p = kinds.add_parser(family.name, help=family.description, description=f"Train a {family.description}.")
        p.add_argument("--data", help="fashion-mnist, mnist, digits, shapes, emoji, or a folder of images "
                                      "(default with --resume: the run's dataset)")
        p.add_argument("--data-dir", help="folder holding the dataset's files (IDX for (fashion-)mnist)")
        p.add_argument("--out", help=f"run folder (default {family.default_out})")
        p.add_argument("--image-size", type=positive_int, help="resize images to N x N (default: the dataset's size)")
        p.add_argument("--channels", type=int, choices=(1, 3), help="1 = grayscale, 3 = RGB")
        p.add_argument("--limit", type=positive_int, help="use only the first N training images")
        p.add_argument("--config", help="JSON file with 'model' and 'train' sections; flags override it")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        add_device(p)
        _distributed_arguments(p)
        for flag in (*train_flags(family), *family.model_flags(), *family.options):
            flag.add_to(p)
        p.set_defaults(run=run_train, family_spec=family)


def _distributed_arguments(p: argparse.ArgumentParser) -> None:
    from genpix.training.distributed import DEFAULT_TIMEOUT_S

    p.add_argument("--nproc", type=positive_int, help="train on N processes on this machine (one per GPU; "
                                                      "gloo on CPUs): runs this command under torchrun")
    p.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="collectives under torchrun (default auto: nccl on CUDA, gloo on the CPU)")
    p.add_argument("--dist-timeout", type=finite_float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long a process waits for the others before the job fails "
                        f"(default {DEFAULT_TIMEOUT_S:g})")


def _launch_or_check(args: argparse.Namespace) -> int | None:
    """``--nproc N`` outside torchrun: run this very command on N processes and return its status."""
    from genpix.device import resolve_device
    from genpix.training import distributed

    need(args.dist_timeout > 0, f"--dist-timeout must be positive, got {args.dist_timeout:g}")
    distributed.choose_backend(args.dist_backend, resolve_device(args.device))  # refuse NCCL on the CPU early
    launched = distributed.launched()
    need(not (launched and args.nproc and args.nproc != distributed.local_world_size()),
         f"--nproc {args.nproc} differs from the {distributed.local_world_size()} processes torchrun "
         f"started on this machine; leave --nproc out under torchrun")
    world = distributed.world_size() if launched else args.nproc or 1
    if args.batch_size:  # before any rendezvous (the trainer checks the final value again)
        distributed.rank_rows(args.batch_size, 0, world)
    return distributed.launch_local(world, args.argv) if not launched and world > 1 else None


def _fit(trainer, data, test, resume: bool) -> dict[str, Any]:
    """``trainer.fit``, leaving the process group however it ends; a failed collective (another
    rank died, or waited past --dist-timeout) becomes a one-line error."""
    import torch.distributed as dist

    from genpix.training import distributed

    rank = distributed.rank_and_world()[0]
    try:
        return trainer.fit(data, test_data=test, resume=resume)
    except (dist.DistError, RuntimeError) as error:
        if not distributed.is_collective_failure(error):
            raise
        raise GenpixError(f"training stopped on rank {rank}: no answer from the other processes "
                          f"({distributed.first_line(error)}); one of them failed (see its message) "
                          f"or was slower than --dist-timeout") from None
    finally:
        distributed.teardown()


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GenpixError(f"--config {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GenpixError(f"--config {path}: not valid JSON ({error})") from None
    need(isinstance(data, dict) and set(data) <= {"model", "train"},
         f"--config {path}: expected an object with 'model' and/or 'train' sections")
    return data


def _previous_run(out: Path, family: Family) -> dict[str, Any]:
    """--resume: the run's config.json, which must be of ``family``."""
    from genpix.io.checkpoint import read_config

    config_path = out / "config.json"
    need(config_path.is_file(), f"--resume: {out} holds no run to resume (no config.json)")
    previous = read_config(config_path)
    need(previous["family"] == family.name,
         f"--resume: {out} holds a {previous['family']} run, not {family.name}; resume it with "
         f"`genpix train {previous['family']} --out {out} --resume`")
    return previous


def _datasets(args: argparse.Namespace, data_info: dict[str, Any]):
    """The training images and the held-out ones (None when the data has no test split); flags left
    out take the resumed run's values."""
    from genpix.data import DataError, load_dataset

    spec = args.data or data_info.get("spec")
    need(spec is not None, "--data is required (fashion-mnist, mnist, digits, shapes, emoji or a folder)")
    data = load_dataset(spec, split="train", image_size=args.image_size if args.image_size is not None else data_info.get("image_size"),
                        channels=args.channels or data_info.get("channels"), data_dir=args.data_dir,
                        limit=args.limit or data_info.get("limit"))
    try:  # held-out images for the final PSNR/SSIM; a one-image folder has none
        with warnings.catch_warnings():  # skipped files were reported by the first load
            warnings.simplefilter("ignore")
            test = load_dataset(spec, split="test", image_size=data.image_size,
                                channels=data.channels, data_dir=args.data_dir, limit=2000)
    except DataError:
        test = None
    return spec, data, test


def _model_config(family: Family, explicit: dict[str, Any], previous: dict[str, Any],
                  file_config: dict[str, Any], data, base: dict[str, Any]) -> Any:
    """The run's model config: a resumed run's own (given flags must agree with it), else ``base`` (the
    model a fine-tuning run starts from), the --config file's ``model`` section and the flags over it,
    and the data's size, channels and classes."""
    if previous:
        saved = previous["model"]
        for key, value in explicit.items():
            need(saved.get(key) == (list(value) if isinstance(value, tuple) else value),
                 f"--resume: --{key.replace('_', '-')} {value} differs from the run's {saved.get(key)}")
        values = saved
    else:
        values = {**base, **file_config.get("model", {}), **explicit, "image_size": data.image_size,
                  "channels": data.channels}
        if "num_classes" in {f.name for f in fields(family.config)}:
            values["num_classes"] = len(data.class_names or ())  # class-conditional families size embeddings by it
    model_config = from_dict(family.config, values, where="model")
    if family.check_data is not None:
        family.check_data(model_config, data)
    return model_config


def run_train(args: argparse.Namespace) -> int:
    import torch

    from genpix.device import set_cpu_threads
    from genpix.training import distributed
    from genpix.training.trainer import TrainConfig, Trainer

    family: Family = args.family_spec
    status = _launch_or_check(args)
    if status is not None:
        return status
    out = Path(args.out or family.default_out)
    previous = _previous_run(out, family) if args.resume else {}
    file_config = _read_json(args.config) if args.config else {}
    spec, data, test = _datasets(args, previous.get("data", {}))
    options = vars(args)
    base = {} if previous else family.base_model_values(options)
    model_config = _model_config(family, given(options, family.model_flags()), previous, file_config, data, base)
    train_values = {**family.train_values(), **previous.get("train", {}), **file_config.get("train", {}),
                    **given(options, train_flags(family))}
    train_config = from_dict(TrainConfig, train_values, where="train")

    device = distributed.setup(args.device, args.dist_backend, args.dist_timeout)
    main = distributed.rank_and_world()[0] == 0
    set_cpu_threads(distributed.cpu_threads_per_rank())
    torch.manual_seed(train_config.seed)  # the initial weights depend on the seed alone
    task = family.make_task(model_config, train_config, device, options)
    run_config = {"data": {"spec": spec, "image_size": data.image_size, "channels": data.channels,
                           "limit": args.limit or previous.get("data", {}).get("limit"),
                           "class_names": list(data.class_names or [])}}
    trainer = Trainer(task, train_config, out, device=device, run_config=run_config, progress=not args.quiet)
    metrics = _fit(trainer, data, test, args.resume)
    if main:
        print(f"saved {family.name} model to {out}")
    if metrics:
        print("held-out " + ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                                      for k, v in metrics.items()))
    return 0
