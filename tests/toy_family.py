"""A family registered by tests/test_train_families.py the way a new one would be: a config, a task and one
``FAMILY`` line. The task fits a per-channel mean image (a 1x1 convolution's bias) with SGD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

from genpix.config import to_dict
from genpix.training.families import Family
from genpix.training.flags import Flag


@dataclass(frozen=True)
class ToyConfig:
    image_size: int = 8
    channels: int = 1
    loss: Literal["l1", "l2"] = "l2"
    centred: bool = False
    scale: float = 1.0
    widths: tuple[int, ...] = (4, 8)


class ToyTask:
    family = "toy"

    def __init__(self, config: ToyConfig, *, lr: float, device: torch.device, seed: int = 0, tag: str = "") -> None:
        self.config, self.tag = config, tag
        self.net = torch.nn.Conv2d(config.channels, config.channels, 1).to(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"sgd": self.optimizer}

    def model_config(self):
        return to_dict(self.config)

    def train_step(self, batch):
        error = self.net(torch.zeros_like(batch.images)) - self.config.scale * batch.images
        loss = error.abs().mean() if self.config.loss == "l1" else error.square().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def snapshot(self, batch):
        return {"mean": Image.new("L", (self.config.image_size,) * 2)}

    def evaluate(self, data):
        return {"tag": self.tag}


FAMILY = Family("toy", "mean image (a test family)", ToyConfig, ToyTask, default_lr=0.5,
                help={"scale": "target scale"}, options=(Flag("tag", str, "a word the task keeps"),),
                task_options=lambda options, train: {"tag": options.get("tag") or "none"})
