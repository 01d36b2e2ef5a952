"""The training loop shared by every family: data order, LR schedule, logs, pictures,
atomic checkpoints and exact resume.

Determinism: the batch at step s and the random state used inside step s are pure functions of
(seed, s) (:mod:`genpix.training.batches`), so a run resumed from the checkpoint at step k
reaches the same weights as an uninterrupted run, step for step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from genpix.config import check, to_dict
from genpix.data import ImageDataset
from genpix.errors import GenpixError
from genpix.io.atomic import check_output_folder, disk_full_is_an_error, write_text_atomic
from genpix.io.checkpoint import (
    CheckpointError,
    check_optimizer_state,
    load_module_weights,
    read_training_checkpoint,
    write_model_dir,
    write_training_checkpoint,
)
from genpix.training import distributed
from genpix.training.batches import batch_indices, batch_noise_seed, step_seed
from genpix.training.task import Batch, Task


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # optimiser steps in all (a resumed run continues up to this)
    batch_size: int = 128  # images per step in all (under torchrun: the global batch, split over the ranks)
    lr: float = 1e-3  # base learning rate
    lr_schedule: Literal["constant", "cosine", "inverse_time"] = "constant"
    warmup_steps: int = 0  # linear warm-up from 0 before the schedule
    seed: int = 0
    log_every: int = 1  # steps between lines in log.jsonl (metrics averaged over them)
    sample_every: int = 500  # steps between sample pictures in samples/
    checkpoint_every: int = 500  # steps between resumable checkpoints in checkpoints/
    keep_checkpoints: int = 2  # how many resumable checkpoints to keep

    def __post_init__(self) -> None:
        check(self.steps >= 1, f"--steps must be at least 1, got {self.steps}")
        check(0 <= self.seed < 2**63, f"--seed must be a whole number from 0 to 2**63 - 1, got {self.seed}")
        check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        check(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")


def lr_factor(config: TrainConfig, step: int) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then the chosen decay."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if config.lr_schedule == "inverse_time":
        # the seed's InverseTimeDecay: lr / (1 + decay_rate * step / decay_steps), rate 0.5 per 10%
        return 1.0 / (1.0 + 5.0 * progress)
    return 1.0


class TrainingDiverged(GenpixError):
    """A loss became NaN or infinite."""


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints in ``out/checkpoints``, oldest first."""
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def discard(checkpoint: Path) -> None:
    """Delete an old checkpoint folder: renamed out of sight first, so that a run killed while
    deleting never leaves a partial ``step-N`` folder for ``--resume`` to find."""
    trash = checkpoint.with_name(f".{checkpoint.name}.deleted")
    shutil.rmtree(trash, ignore_errors=True)  # left by a run killed mid-delete
    os.replace(checkpoint, trash)
    shutil.rmtree(trash, ignore_errors=True)


def to_batch(data: ImageDataset, indices: torch.Tensor, device: torch.device, images: torch.Tensor) -> Batch:
    x = images[indices.to(images.device)].to(device, non_blocking=True).float().div_(255)
    labels = data.labels[indices].to(device) if data.labels is not None else None
    captions = [data.captions[i] for i in indices.tolist()] if data.captions is not None else None
    return Batch(x, labels, captions, indices=indices)


def window_means(window: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Mean of each metric over the steps in ``window`` and over all ranks."""
    keys = list(window)
    if not keys:
        return {}
    local = torch.stack([torch.stack(window[k]).mean() for k in keys])
    return dict(zip(keys, distributed.all_reduce_mean(local).tolist()))


def _log_step(line: str) -> int | None:
    """The step of one log.jsonl line; None for a half-written or otherwise unreadable one."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


class Trainer:
    """Runs a :class:`Task` on a dataset, writing everything under ``out``::

        out/config.json, out/model.safetensors   the latest weights (a loadable model folder)
        out/log.jsonl                            one JSON line per ``log_every`` steps
        out/samples/NAME-STEP.png                pictures from ``task.snapshot``
        out/diagnostics.jsonl                    records from ``task.diagnose`` (optional), when due
        out/checkpoints/step-NNNNNNNN/           resumable checkpoints, written atomically
        out/metrics.json                         held-out figures from ``task.evaluate``
    """

    def __init__(self, task: Task, config: TrainConfig, out: str | Path, *, device: torch.device,
                 run_config: dict[str, Any], progress: bool = True) -> None:
        self.task, self.config, self.out = task, config, Path(out)
        self.device, self.progress = device, progress
        self.run_config = run_config  # the "data" section and anything else config.json records

    # --- files ---------------------------------------------------------------------------------

    def _full_config(self, step: int, **extra: Any) -> dict[str, Any]:
        return {"family": self.task.family, "model": self.task.model_config(),
                "train": to_dict(self.config), "step": step,
                "distributed": distributed.describe(self.config.batch_size), **self.run_config, **extra}

    def _checkpoint(self, step: int) -> None:
        path = self.out / "checkpoints" / f"step-{step:08d}"
        # the run folder's own model first: a checkpoint that --resume can find always has the run's
        # config.json beside it (a kill between the two leaves newer weights, which a resume rewrites)
        write_model_dir(self.out, self._full_config(step), self.task.modules())
        write_training_checkpoint(path, self._full_config(step), self.task.modules(),
                                  self.task.optimizers(), {"step": step})
        for old in checkpoint_dirs(self.out)[: -self.config.keep_checkpoints]:
            discard(old)

    def _resume(self) -> int:
        """Load the newest readable checkpoint; return its step. Corrupt ones are skipped."""
        errors = []
        for path in reversed(checkpoint_dirs(self.out)):
            try:
                ckpt = read_training_checkpoint(path)
                if ckpt.model.config["model"] != self.task.model_config():
                    raise GenpixError(f"{path} holds a different model config than this run")
                for role, module in self.task.modules().items():
                    load_module_weights(module, ckpt.model.weights.get(role, {}), f"{path} ({role})")
                for name, optimizer in self.task.optimizers().items():
                    check_optimizer_state(optimizer, ckpt.optimizers[name], f"{path} ({name})")
                    optimizer.load_state_dict(ckpt.optimizers[name])
            except (CheckpointError, KeyError, ValueError) as error:  # ValueError: load_state_dict's own check
                errors.append(f"{path.name}: {error}")
                continue
            if errors:
                warnings.warn(f"skipped unreadable checkpoint(s): {'; '.join(errors)}", stacklevel=2)
            return int(ckpt.state["step"])
        if errors:
            raise CheckpointError(f"no readable checkpoint in {self.out / 'checkpoints'}: {errors[0]}")
        raise CheckpointError(f"--resume: no checkpoint in {self.out / 'checkpoints'} to resume from")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past ``step`` (written after the checkpoint a resume starts from) and any
        line a kill or power loss left half-written; the log is rewritten atomically."""
        for log in (self.out / "log.jsonl", self.out / "diagnostics.jsonl"):
            if log.exists():
                lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()
                         if _log_step(ln) is not None and _log_step(ln) <= step]
                write_text_atomic(log, "".join(ln + "\n" for ln in lines))

    # --- the loop ------------------------------------------------------------------------------

    def fit(self, data: ImageDataset, *, test_data: ImageDataset | None = None,
            resume: bool = False) -> dict[str, float]:
        """Train from step 0 (or the newest checkpoint with ``resume``) to ``config.steps``; a full
        disk stops the run with a one-line DiskFullError and leaves the last checkpoint intact."""
        check_output_folder(self.out, "--out")
        with disk_full_is_an_error(self.out):
            return self._fit(data, test_data, resume)

    def _fit(self, data: ImageDataset, test_data: ImageDataset | None, resume: bool) -> dict[str, float]:
        cfg = self.config
        rank, world = distributed.rank_and_world()
        main = rank == 0  # only rank 0 writes files and shows progress
        rows = distributed.rank_rows(cfg.batch_size, rank, world)
        optimizers = self.task.optimizers()
        # the optimisers as the task built them hold the base LRs; a checkpoint holds scaled ones
        base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}
        if resume:
            start = self._resume()
            if main:
                self._truncate_log(start)
        elif checkpoint_dirs(self.out):
            raise GenpixError(f"{self.out} already holds a training run; pass --resume to continue it "
                              f"or choose another --out")
        else:
            start = 0
            if main:
                self._truncate_log(0)  # lines of a run killed before its first checkpoint
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._distribute(world, distributed.ddp_wrapper(self.device))
        images = data.images.to(self.device) if self.device.type == "cuda" else data.images
        generator = torch.Generator(self.device)
        bar = tqdm(total=cfg.steps, initial=start, disable=not (self.progress and main),
                   dynamic_ncols=True, desc=f"train {self.task.family}")
        window: dict[str, list[torch.Tensor]] = {}
        last_checkpoint = start
        tic = time.perf_counter()
        with open(self.out / "log.jsonl", "a", encoding="utf-8") if main else contextlib.nullcontext() as log:
            for step in range(start, cfg.steps):
                factor = lr_factor(cfg, step)
                for name, opt in optimizers.items():
                    for group, base in zip(opt.param_groups, base_lrs[name]):
                        group["lr"] = base * factor
                batch = self._batch(data, images, step, rank, rows, generator)
                metrics = self.task.train_step(batch)
                for key, value in metrics.items():
                    window.setdefault(key, []).append(value.detach().float())
                done = step + 1
                due_checkpoint = done % cfg.checkpoint_every == 0 or done == cfg.steps
                if done % cfg.log_every == 0 or due_checkpoint:
                    means = window_means(window)  # over all ranks: the global batch's figures
                    window.clear()
                    bad = [k for k, v in means.items() if not math.isfinite(v)]
                    if bad:
                        kept = f"step {last_checkpoint}" if last_checkpoint else "none written yet"
                        raise TrainingDiverged(
                            f"{bad[0]} became {means[bad[0]]} at step {done}; training stopped. "
                            f"Last good checkpoint: {kept} in {self.out} (try a lower --lr)")
                    elapsed = time.perf_counter() - tic
                    record = {"step": done, **{k: round(v, 6) for k, v in means.items()},
                              "lr_factor": round(factor, 6),
                              "images_per_s": round((done - start) * cfg.batch_size / elapsed, 2)}
                    if main:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:4]}, refresh=False)
                if main:
                    if done % cfg.sample_every == 0 or done == cfg.steps:
                        self._write_pictures(batch, done)
                    self._diagnose(data, done)
                    if due_checkpoint:
                        self._checkpoint(done)
                if due_checkpoint:
                    last_checkpoint = done
                bar.update(1)
        bar.close()
        self._distribute(world, distributed.unwrapped)
        distributed.barrier(self.device)  # every rank returns once the run folder is complete
        if not main:
            return {}
        metrics = self.task.evaluate(test_data) if test_data is not None and len(test_data) else {}
        if metrics:
            (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            write_model_dir(self.out, self._full_config(cfg.steps, metrics=metrics), self.task.modules())
        return metrics

    def _distribute(self, world: int, wrap) -> None:
        """Route the task's forward passes through DDP (or back) when the run has several ranks."""
        if world == 1:
            return
        distribute = getattr(self.task, "distribute", None)
        if distribute is None:
            raise GenpixError(f"the {self.task.family} family cannot train on several processes yet "
                              f"(its task has no distribute() hook); run it without torchrun")
        distribute(wrap)

    def _batch(self, data: ImageDataset, images: torch.Tensor, step: int, rank: int, rows: slice,
               generator: torch.Generator) -> Batch:
        """This rank's rows of the global batch at ``step``, and the step's random state: the
        global RNG seeded from (seed, step, rank), ``batch.generator`` from (seed, step) alone."""
        cfg = self.config
        torch.manual_seed(step_seed(cfg.seed, step, rank))
        indices = batch_indices(len(data), cfg.batch_size, cfg.seed, step)[rows]
        batch = to_batch(data, indices, self.device, images)
        batch.generator = generator.manual_seed(batch_noise_seed(cfg.seed, step))
        batch.offset, batch.global_size = rows.start, cfg.batch_size
        return batch

    def _diagnose(self, data: ImageDataset, step: int) -> None:
        """Append ``task.diagnose``'s record, when the task has one and it is due, to diagnostics.jsonl."""
        diagnose = getattr(self.task, "diagnose", None)
        record = diagnose(step, data, self.out) if diagnose is not None else None
        if record:
            with open(self.out / "diagnostics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **record}) + "\n")

    def _write_pictures(self, batch: Batch, step: int) -> None:
        folder = self.out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        for name, picture in self.task.snapshot(batch).items():
            picture.save(folder / f"{name}-{step:08d}.png")
