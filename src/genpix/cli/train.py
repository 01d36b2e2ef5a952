"""``genpix train FAMILY``: one command shape for every model family."""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from genpix.cli.common import add_device, finite_float, need, positive_int
from genpix.config import ConfigError, from_dict, to_dict
from genpix.errors import GenpixError


@dataclass(frozen=True)
class Family:
    """How the CLI builds one family's model config and training task."""

    name: str
    help: str
    config_cls: type
    add_arguments: Callable[[argparse.ArgumentParser], None]
    make_task: Callable[..., Any]  # (model_config, train_config, device, args) -> Task
    default_lr: float
    default_out: str
    train_defaults: tuple[tuple[str, Any], ...] = ()  # TrainConfig values this family prefers
    check_data: Callable[[Any, Any], None] | None = None  # (model_config, dataset): refuse unusable data early


def _vae_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latent-dim", type=int, help="dimension of z (default 2, the seed's plane)")
    p.add_argument("--hidden-dim", type=int, help="dense layer before mu/logvar (default 16)")
    p.add_argument("--widths", type=lambda s: tuple(int(x) for x in s.split(",")),
                   help="channels of the strided convolutions, e.g. 32,64 (default)")
    p.add_argument("--reconstruction", choices=("bce", "mse"), help="reconstruction term (default bce)")
    p.add_argument("--beta", type=finite_float, help="weight of the KL term (default 1)")


def _vae_task(model_config, train_config, device, args):
    from genpix.training.vae import VAETask

    return VAETask(model_config, lr=train_config.lr, device=device, seed=train_config.seed)


def _gan_arguments(p: argparse.ArgumentParser) -> None:
    from genpix.models.gan import LOSSES, STABILISERS

    p.add_argument("--latent-dim", type=int, help="dimension of z (default 100)")
    p.add_argument("--width", type=int, help="channels next to the image in G and D, doubling inwards "
                                             "(default 64, Radford et al.'s ngf/ndf)")
    p.add_argument("--cond", choices=("none", "class"),
                   help="class: label embedding into G, projection discriminator (default none)")
    p.add_argument("--loss", choices=LOSSES,
                   help="generator loss: -log D(G(z)) (default) or the minimax log(1 - D(G(z)))")
    p.add_argument("--stabiliser", choices=STABILISERS,
                   help="one-sided label smoothing (real target 0.9), R1 gradient penalty, or "
                        "spectral norm in D (default none)")
    p.add_argument("--r1-gamma", type=finite_float, help="weight of the R1 penalty (default 10)")
    p.add_argument("--diagnostics-every", type=positive_int,
                   help="steps between mode-collapse diagnostics in diagnostics.jsonl "
                        "(default: --sample-every)")


def _gan_task(model_config, train_config, device, args):
    from genpix.training.gan import GANTask

    every = args.diagnostics_every or train_config.sample_every
    return GANTask(model_config, lr=train_config.lr, device=device, seed=train_config.seed,
                   diagnostics_every=every)


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _ddpm_arguments(p: argparse.ArgumentParser) -> None:
    from genpix.diffusion.config import SCHEDULES
    from genpix.models.unet import PRESETS, count_parameters, preset_config

    sizes = ", ".join(f"{name} {count_parameters(preset_config(name, image_size=32)) / 1e6:.1f}M"
                      for name in PRESETS)
    p.add_argument("--preset", choices=tuple(PRESETS), help=f"U-Net size, parameters at 1 channel: {sizes} "
                                                            f"(default tiny)")
    p.add_argument("--base-channels", type=positive_int, help="override the preset's first-level channels")
    p.add_argument("--channel-mult", type=_int_tuple, help="override the channel multipliers, e.g. 1,2,2")
    p.add_argument("--num-res-blocks", type=positive_int, help="override residual blocks per level")
    p.add_argument("--attention-levels", type=_int_tuple, help="levels with self-attention, e.g. 2 (0 = full size)")
    p.add_argument("--dropout", type=finite_float, help="dropout in residual blocks (default 0)")
    p.add_argument("--schedule", choices=SCHEDULES, help="noise schedule (default linear 1e-4..0.02; "
                                                         "signal_cosine is the seed's continuous one)")
    p.add_argument("--timesteps", type=positive_int, help="T of the discrete schedules (default 1000)")
    p.add_argument("--prediction", choices=("eps", "v", "x0"), help="what the network predicts (default eps)")
    p.add_argument("--loss", choices=("mse", "mae"), help="mse (Ho et al.) or mae (the seed) (default mse)")
    p.add_argument("--min-snr-gamma", type=finite_float, help="min-SNR loss weighting, e.g. 5 (default off)")
    p.add_argument("--cond", choices=("none", "class"), help="class: class-conditional with label dropout "
                                                             "for classifier-free guidance (default none)")
    p.add_argument("--cond-drop-prob", type=finite_float, help="label dropout probability (default 0.1)")
    p.add_argument("--ema-decay", type=finite_float, help="EMA decay of the sampling weights (default 0.999)")
    p.add_argument("--grad-clip", type=finite_float, help="max gradient norm, 0 = off (default 1)")
    p.add_argument("--weight-decay", type=finite_float, help="AdamW weight decay (default 0)")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"),
                   help="autocast dtype on CUDA (default bf16; the CPU always trains in float32)")


def _ddpm_task(model_config, train_config, device, args):
    from genpix.training.ddpm import DDPMTask

    return DDPMTask(model_config, lr=train_config.lr, device=device, seed=train_config.seed)


def families() -> dict[str, Family]:
    from genpix.cli.train_latent import latent_families
    from genpix.diffusion.config import DDPMConfig
    from genpix.models.gan import GANConfig
    from genpix.models.vae import VAEConfig

    return {
        "vae": Family("vae", "convolutional VAE (seed listings 17.1-17.5)", VAEConfig,
                      _vae_arguments, _vae_task, default_lr=1e-3, default_out="runs/vae"),
        "ddpm": Family("ddpm", "pixel-space diffusion U-Net (DDPM / DDIM, seeds 000-003)", DDPMConfig,
                       _ddpm_arguments, _ddpm_task, default_lr=1e-3, default_out="runs/ddpm",
                       train_defaults=(("warmup_steps", 100), ("lr_schedule", "cosine"))),
        "gan": Family("gan", "DCGAN (Radford et al. 2016; seed 003, seed 004 section 16.8.2)", GANConfig,
                      _gan_arguments, _gan_task, default_lr=2e-4, default_out="runs/gan"),
        **latent_families(),
    }


TRAIN_FIELDS = ("steps", "batch_size", "lr", "lr_schedule", "warmup_steps", "seed", "log_every",
                "sample_every", "checkpoint_every")


def register(commands) -> None:
    train = commands.add_parser("train", help="train a generator on a dataset or an image folder")
    kinds = train.add_subparsers(dest="family", metavar="FAMILY")
    kinds.required = True
    for family in families().values():
        p = kinds.add_parser(family.name, help=family.help, description=f"Train a {family.help}.")
        p.add_argument("--data", help="fashion-mnist, mnist, digits, shapes, emoji, or a folder of images "
                                      "(default with --resume: the run's dataset)")
        p.add_argument("--data-dir", help="folder holding the dataset's files (IDX for (fashion-)mnist)")
        p.add_argument("--out", help=f"run folder (default {family.default_out})")
        p.add_argument("--steps", type=int, help="optimiser steps in all (default 2000)")
        p.add_argument("--batch-size", type=int, help="images per step in all (default 128); with several "
                                                      "processes (torchrun, --nproc) the global batch, "
                                                      "split evenly over them")
        p.add_argument("--lr", type=finite_float, help=f"learning rate (default {family.default_lr:g})")
        p.add_argument("--lr-schedule", choices=("constant", "cosine", "inverse_time"))
        p.add_argument("--warmup-steps", type=int)
        p.add_argument("--image-size", type=int, help="resize images to N x N (default: the dataset's size)")
        p.add_argument("--channels", type=int, choices=(1, 3), help="1 = grayscale, 3 = RGB")
        p.add_argument("--limit", type=positive_int, help="use only the first N training images")
        p.add_argument("--seed", type=int, help="random seed (default 0)")
        p.add_argument("--log-every", type=int, help="steps per log.jsonl line (default 1)")
        p.add_argument("--sample-every", type=int, help="steps between sample grids (default 500)")
        p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
        p.add_argument("--config", help="JSON file with 'model' and 'train' sections; flags override it")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        add_device(p)
        _distributed_arguments(p)
        family.add_arguments(p)
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


def _explicit(args: argparse.Namespace, names) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


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


def run_train(args: argparse.Namespace) -> int:
    import torch

    from genpix.data import DataError, load_dataset
    from genpix.device import set_cpu_threads
    from genpix.io.checkpoint import read_config
    from genpix.training import distributed
    from genpix.training.trainer import TrainConfig, Trainer

    family: Family = args.family_spec
    status = _launch_or_check(args)
    if status is not None:
        return status
    out = Path(args.out or family.default_out)
    previous: dict[str, Any] = {}
    if args.resume:
        config_path = out / "config.json"
        need(config_path.is_file(), f"--resume: {out} holds no run to resume (no config.json)")
        previous = read_config(config_path)
        need(previous["family"] == family.name,
             f"--resume: {out} holds a {previous['family']} run, not {family.name}; resume it with "
             f"`genpix train {previous['family']} --out {out} --resume`")
    file_config = _read_json(args.config) if args.config else {}

    data_info = previous.get("data", {})
    spec = args.data or data_info.get("spec")
    need(spec is not None, "--data is required (fashion-mnist, mnist, digits, shapes, emoji or a folder)")
    image_size = args.image_size or data_info.get("image_size")
    channels = args.channels or data_info.get("channels")
    limit = args.limit or data_info.get("limit")
    data = load_dataset(spec, split="train", image_size=image_size, channels=channels,
                        data_dir=args.data_dir, limit=limit)
    try:  # held-out images for the final PSNR/SSIM; a one-image folder has none
        with warnings.catch_warnings():  # skipped files were reported by the first load
            warnings.simplefilter("ignore")
            test = load_dataset(spec, split="test", image_size=data.image_size,
                                channels=data.channels, data_dir=args.data_dir, limit=2000)
    except DataError:
        test = None

    model_names = [f.name for f in fields(family.config_cls)]
    explicit = _explicit(args, model_names)
    if previous:
        saved = previous["model"]
        for key, value in explicit.items():
            need(saved.get(key) == (list(value) if isinstance(value, tuple) else value),
                 f"--resume: --{key.replace('_', '-')} {value} differs from the run's {saved.get(key)}")
        model_values = saved
    else:
        model_values = {**file_config.get("model", {}), **explicit,
                        "image_size": data.image_size, "channels": data.channels}
        if "num_classes" in model_names:  # class-conditional families size their embeddings by it
            model_values["num_classes"] = len(data.class_names or ())
    model_config = from_dict(family.config_cls, model_values, where="model")
    if family.check_data is not None:
        family.check_data(model_config, data)

    train_values = {"lr": family.default_lr, **dict(family.train_defaults), **previous.get("train", {}),
                    **file_config.get("train", {}), **_explicit(args, TRAIN_FIELDS)}
    train_config = from_dict(TrainConfig, train_values, where="train")

    device = distributed.setup(args.device, args.dist_backend, args.dist_timeout)
    main = distributed.rank_and_world()[0] == 0
    set_cpu_threads(distributed.cpu_threads_per_rank())
    torch.manual_seed(train_config.seed)  # the initial weights depend on the seed alone
    task = family.make_task(model_config, train_config, device, args)
    run_config = {"data": {"spec": spec, "image_size": data.image_size, "channels": data.channels,
                           "limit": limit, "class_names": list(data.class_names or [])}}
    trainer = Trainer(task, train_config, out, device=device, run_config=run_config,
                      progress=not args.quiet)
    metrics = _fit(trainer, data, test, args.resume)
    if main:
        print(f"saved {family.name} model to {out}")
    if metrics:
        print("held-out " + ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                                      for k, v in metrics.items()))
    return 0


__all__ = ["register", "families", "Family", "ConfigError", "to_dict"]
