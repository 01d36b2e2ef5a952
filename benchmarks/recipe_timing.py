"""CPU seconds per optimiser step of one stage of a recipe, and the stage's whole run estimated from it.

Builds the stage's training task from ``recipes/NAME[.STAGE].json`` at the data's size, runs
``--warmup`` steps, then times ``--steps`` steps of real batches of the dataset: process CPU time
(what the step costs on one core, whatever else the machine runs) and wall time. A latent stage
gets an untrained first stage of the recipe's autoencoder (the same arithmetic as a trained one).

    GENPIX_THREADS=1 python benchmarks/recipe_timing.py emoji-ldm --stage autoencoder --data emoji-captions
    GENPIX_THREADS=1 python benchmarks/recipe_timing.py emoji-ldm --stage ldm --data emoji-captions
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from genpix.config import from_dict
from genpix.data import load_dataset
from genpix.device import set_cpu_threads
from genpix.models.autoencoder import AutoencoderKL
from genpix.training.families import get_family
from genpix.training.task import Batch
from genpix.training.trainer import TrainConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def stage_task(name: str, stage: str, data):
    """(the stage's task, its TrainConfig) for ``recipes/NAME[.STAGE].json`` on ``data``."""
    suffix = "" if stage in ("ldm", "ddpm", "vae") else f".{stage}"
    recipe = json.loads((RECIPES / f"{name}{suffix}.json").read_text())
    family = get_family(stage)
    values = {**recipe["model"], "image_size": data.image_size, "channels": data.channels}
    model_config = from_dict(family.config, values, where="model")
    train_config = from_dict(TrainConfig, {**family.train_values(), **recipe["train"]}, where="train")
    extra = {}
    if stage in ("ldm", "preview-decoder"):
        first = from_dict(get_family("autoencoder").config, {**json.loads(
            (RECIPES / f"{name}.autoencoder.json").read_text())["model"], "image_size": data.image_size,
            "channels": data.channels}, where="model")
        extra = {"autoencoder" if stage == "ldm" else "teacher": AutoencoderKL(first.network()).eval()}
    task = family.task(model_config, lr=train_config.lr, device=torch.device("cpu"), seed=0, **extra)
    return task, train_config


def time_steps(task, data, batch_size: int, steps: int, warmup: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per step, after ``warmup`` untimed steps."""
    cpu = wall = 0.0
    for step in range(warmup + steps):
        index = torch.randint(len(data), (batch_size,), generator=torch.Generator().manual_seed(step))
        batch = Batch(data.images[index].float() / 255, None if data.labels is None else data.labels[index],
                      None if data.captions is None else [data.captions[i] for i in index.tolist()],
                      generator=torch.Generator().manual_seed(step))
        tic, tic_cpu = time.perf_counter(), time.process_time()
        task.train_step(batch)
        if step >= warmup:
            cpu += time.process_time() - tic_cpu
            wall += time.perf_counter() - tic
    return cpu / steps, wall / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="recipe name, e.g. emoji-ldm")
    parser.add_argument("--stage", default="ldm", help="ldm, ddpm, vae, autoencoder or preview-decoder")
    parser.add_argument("--data", required=True)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    set_cpu_threads()
    data = load_dataset(args.data, image_size=args.image_size, channels=args.channels)
    task, train = stage_task(args.name, args.stage, data)
    cpu, wall = time_steps(task, data, train.batch_size, args.steps, args.warmup)
    print(f"{args.name} {args.stage}: batch {train.batch_size}, {cpu:.2f} CPU s/step ({wall:.2f} s wall) over "
          f"{args.steps} steps, threads {torch.get_num_threads()}; {train.steps} steps = "
          f"{train.steps * cpu / 60:.0f} CPU min ({train.steps * wall / 60:.0f} min at this wall rate)")


if __name__ == "__main__":
    main()
