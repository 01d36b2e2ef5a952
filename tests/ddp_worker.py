"""``genpix ARGS`` in this process, observed: ``python ddp_worker.py OBS_DIR ARGS...`` (under torchrun
or alone) runs the real command and writes OBS_DIR/rank-R.pt with the VAE's parameters after every
step and how many training checkpoints this rank wrote. Used by test_distributed.py."""

import os
import sys
from pathlib import Path

import torch

import genpix.training.trainer as trainer
from genpix.cli import main
from genpix.training.vae import VAETask

observed: dict = {"params": [], "checkpoints": 0}
train_step, write_checkpoint = VAETask.train_step, trainer.write_training_checkpoint


def train_step_observed(task, batch):
    metrics = train_step(task, batch)
    observed["params"].append(torch.cat([p.detach().flatten() for p in task.vae.parameters()]).clone())
    return metrics


def write_checkpoint_observed(*args, **kwargs):
    observed["checkpoints"] += 1
    return write_checkpoint(*args, **kwargs)


VAETask.train_step, trainer.write_training_checkpoint = train_step_observed, write_checkpoint_observed
status = main(sys.argv[2:])
torch.save({"params": torch.stack(observed["params"]), "checkpoints": observed["checkpoints"]},
           Path(sys.argv[1]) / f"rank-{os.environ.get('RANK', '0')}.pt")
sys.exit(status)
