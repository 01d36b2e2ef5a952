"""The model families ``genpix train`` knows, each declared once, beside its training task.

A family is one :class:`Family` value: its name, its config dataclass (the run's ``model`` section),
its training task, its learning rate and the TrainConfig values it prefers, and the help of its
flags. The ``genpix train FAMILY`` flags are derived from the config's fields (training/flags.py):
``--latent-dim`` from ``latent_dim: int = 2``, choices from a ``Literal``, the shown default from
the field's default. The CLI (cli/train.py) holds no family's name.

Adding a family (say ``upscaler``) takes two steps:

1. in its training module (``genpix/training/upscaler.py``), beside the task class::

       FAMILY = Family("upscaler", "Real-ESRGAN-style 4x upscaler", UpscalerConfig, UpscalerTask,
                       default_lr=2e-4, help={"scale": "upscaling factor"})

   The task is built as ``UpscalerTask(model_config, lr=..., device=..., seed=..., **extra)``, where
   ``extra = family.task_options(options, train_config)`` when the family needs more (its
   non-config flags: ``options=(Flag(...),)``); ``hidden`` names config fields without a flag
   (``image_size``, ``channels`` and ``num_classes`` always come from the data); ``check_data``
   refuses a dataset the config cannot train on.
2. register it with one line in :data:`FAMILY_MODULES` below: ``"upscaler": "genpix.training.upscaler",``;
   its runs' config.json then says ``"family": "upscaler"``, a name that ``genpix.io.checkpoint.FAMILIES``
   (the model-folder format, below this layer) must list too.

``tests/test_train_families.py`` then checks its flags against its config like every other family's.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genpix.errors import GenpixError
from genpix.training.flags import Flag, config_flags
from genpix.training.task import Task

if TYPE_CHECKING:
    import torch

FAMILY_MODULES: dict[str, str] = {  # name -> the module whose FAMILY it is; the order of `genpix train --help`
    "vae": "genpix.training.vae",
    "ddpm": "genpix.training.ddpm",
    "gan": "genpix.training.gan",
    "autoencoder": "genpix.training.autoencoder",
    "ldm": "genpix.training.ldm",
    "preview-decoder": "genpix.training.preview_decoder",
    "lora": "genpix.training.lora",
    "upscaler": "genpix.training.upscaler",
}

SET_FROM_DATA = frozenset({"image_size", "channels", "num_classes"})  # config fields the dataset decides


@dataclass(frozen=True)
class Family:
    """One trainable model family: config, task, defaults and flag help (see the module docstring)."""

    name: str
    description: str  # one line for `genpix train --help`
    config: type  # frozen dataclass: the run's "model" section
    task: Callable[..., Task]  # task(model_config, *, lr, device, seed, **task_options(...))
    default_lr: float
    help: Mapping[str, str | Callable[[], str]] = field(default_factory=dict)  # config field -> flag help
    hidden: frozenset[str] = frozenset()  # config fields without a flag, besides SET_FROM_DATA
    options: tuple[Flag, ...] = ()  # flags that are no config field (e.g. the ldm's --autoencoder)
    task_options: Callable[[Mapping[str, Any], Any], dict[str, Any]] | None = None  # (flag values, TrainConfig)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig values this family prefers
    check_data: Callable[[Any, Any], None] | None = None  # (model_config, dataset): refuse unusable data early
    # (flag values) -> the model section a new run starts from, under --config and the flags (a fine-tuned model's)
    base_model: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None

    @property
    def default_out(self) -> str:
        return f"runs/{self.name}"

    def train_values(self) -> dict[str, Any]:
        """This family's TrainConfig values over TrainConfig's own defaults."""
        return {"lr": self.default_lr, **self.train_defaults}

    def model_flags(self) -> list[Flag]:
        """The flags of the config's fields (all but SET_FROM_DATA and ``hidden``)."""
        fields = {f.name for f in dataclasses.fields(self.config)}
        return config_flags(self.config, self.help, skip=(SET_FROM_DATA | self.hidden) & fields)

    def base_model_values(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The model values a new run starts from before --config and the flags (none by default)."""
        return dict(self.base_model(options)) if self.base_model else {}

    def make_task(self, model_config: Any, train_config: Any, device: torch.device,
                  options: Mapping[str, Any] | None = None) -> Task:
        """The training task for ``model_config``; ``options`` are the parsed flags (``vars(args)``)."""
        extra = self.task_options(options or {}, train_config) if self.task_options else {}
        return self.task(model_config, lr=train_config.lr, device=device, seed=train_config.seed, **extra)


def get_family(name: str) -> Family:
    """The registered family ``name`` (importing its module)."""
    if name not in FAMILY_MODULES:
        raise GenpixError(f"unknown family {name!r}; choose one of: {', '.join(FAMILY_MODULES)}")
    family = importlib.import_module(FAMILY_MODULES[name]).FAMILY
    if family.name != name:
        raise GenpixError(f"{FAMILY_MODULES[name]}.FAMILY is named {family.name!r}, registered as {name!r}")
    return family


def families() -> dict[str, Family]:
    """Every registered family by name, in :data:`FAMILY_MODULES` order."""
    return {name: get_family(name) for name in FAMILY_MODULES}
