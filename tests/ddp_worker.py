"""``genpix ARGS`` in this process, observed: ``python ddp_worker.py OBS_DIR ARGS...`` (under torchrun
or alone) runs the real command and writes OBS_DIR/rank-R.pt with the task's whole state (every
network's parameters and buffers, an EMA copy and batch-norm statistics included) after every step
and how many training checkpoints this rank wrote. Used by test_distributed.py."""

import os
import sys
from pathlib import Path

import torch

import genpix.training.trainer as trainer
from genpix.cli import main
from genpix.training.ddpm import DDPMTask
from genpix.training.gan import GANTask
from genpix.training.vae import VAETask

observed: dict = {"state": [], "checkpoints": 0}
write_checkpoint = trainer.write_training_checkpoint


def observe(train_step):
    def train_step_observed(task, batch):
        metrics = train_step(task, batch)
        tensors = [t.detach().flatten().double() for module in task.modules().values()
                   for t in module.state_dict().values()]
        observed["state"].append(torch.cat(tensors))
        return metrics
    return train_step_observed


def write_checkpoint_observed(*args, **kwargs):
    observed["checkpoints"] += 1
    return write_checkpoint(*args, **kwargs)


for task_class in (VAETask, GANTask, DDPMTask):
    task_class.train_step = observe(task_class.train_step)
trainer.write_training_checkpoint = write_checkpoint_observed
status = main(sys.argv[2:])
torch.save({"state": torch.stack(observed["state"]), "checkpoints": observed["checkpoints"]},
           Path(sys.argv[1]) / f"rank-{os.environ.get('RANK', '0')}.pt")
sys.exit(status)
