"""Training a LoRA (Hu et al. 2021) for a Stable Diffusion 1.x / 2.x checkpoint on your own pictures.

``genpix train lora --base CHECKPOINT --data FOLDER`` (captions from sidecar .txt files or
metadata.jsonl, data/folder.py; ``--image-size`` is the training resolution). The base U-Net, text
encoder and autoencoder stay frozen; only the LoRA layers (models/lora_network.py) learn, on
Stable Diffusion's own objective (Rombach et al. 2022, eq. 2): z0 = scaling_factor * z, z ~ q(z|x);
t uniform over the 1000 training steps; x_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps; the U-Net's eps (or
v = sqrt(a_t) eps - sqrt(1 - a_t) z0 for v models) against the target under the mean squared error,
with the caption encoded by the (LoRA-adapted) text encoder. The shared trainer gives the progress
bar, atomic checkpoints, exact resume and torchrun.

Besides the run folder, the network is written as a kohya-format file ``OUT/NAME.safetensors``
(NAME = the run folder's name) at every checkpoint: sd-webui, ComfyUI and diffusers'
``load_lora_weights`` read it, and so does ``genpix generate`` with ``<lora:NAME:1>`` once it is in
the LoRA folder (sd-scripts' ``ss_*`` metadata included).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from genpix.config import check, to_dict
from genpix.data import ImageDataset
from genpix.errors import GenpixError
from genpix.io.atomic import write_atomic
from genpix.io.sd_loader import SDComponents, load_sd_components
from genpix.models.lora_network import LoRANetwork, Targets, choose_targets
from genpix.training.families import Family
from genpix.training.task import Batch


@dataclass(frozen=True)
class LoRATrainingConfig:
    """The ``model`` section of a LoRA run: the base checkpoint and the network's shape."""

    base: str = ""  # the Stable Diffusion checkpoint (.safetensors / .ckpt, or a diffusers folder)
    tokenizer: str | None = None  # a tokenizer folder, for single files without a cached vocabulary
    rank: int = 8  # r of every LoRA layer (kohya's network_dim)
    alpha: float = 8.0  # the scale is alpha / r (kohya's network_alpha)
    targets: Targets = "transformer"  # attn | transformer | transformer+conv (LoCon)
    text_encoder: Literal["lora", "frozen"] = "lora"  # LoRA layers in the text encoder too, or none
    image_size: int = 512  # training resolution (set from the data)
    channels: int = 3  # set from the data

    def __post_init__(self) -> None:
        check(bool(self.base), "--base is required: the Stable Diffusion checkpoint to adapt")
        check(self.rank >= 1, f"--rank must be at least 1, got {self.rank}")
        check(self.alpha > 0, f"--alpha must be positive, got {self.alpha}")
        check(self.channels == 3, f"Stable Diffusion trains on RGB pictures (--channels 3), got {self.channels}")


class AdaptedForward(nn.Module):
    """eps_theta(x_t, t, caption ids) through the frozen base with the LoRA layers attached. The LoRA
    network is its only registered part: what DistributedDataParallel synchronises under torchrun."""

    def __init__(self, network: LoRANetwork, unet: nn.Module, text_model: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.base = (unet, text_model)  # a tuple: not submodules, so neither saved nor synchronised

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        unet, text_model = self.base
        with self.network.attached():
            return unet(x_t, t, text_model(ids).tokens)


class LoRATask:
    family = "lora"

    def __init__(self, config: LoRATrainingConfig, *, lr: float, device: torch.device, seed: int = 0,
                 export_every: int = 500, steps: int = 0, parts: SDComponents | None = None) -> None:
        """``parts``: the base already loaded (benchmarks); else read from ``config.base``."""
        parts = parts or load_sd_components(config.base, tokenizer=config.tokenizer, safety_checker=False)
        self.config, self.device, self.parts = config, device, parts
        self.factor = parts.vae.config.downsampling_factor
        if config.image_size % 8:
            raise GenpixError(f"--image-size must be a multiple of 8 for Stable Diffusion, got {config.image_size}")
        for module in (parts.unet, parts.text_model, parts.vae):
            module.to(device).eval().requires_grad_(False)
        bases = choose_targets(parts.unet, "lora_unet_", config.targets, text=False)
        if config.text_encoder == "lora":
            bases.update(choose_targets(parts.text_model, "lora_te_", config.targets, text=True))
        self.network = LoRANetwork(bases, config.rank, config.alpha).to(device)
        self.adapted = self.call = AdaptedForward(self.network, parts.unet, parts.text_model)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=lr, weight_decay=0.0)
        self.alphas_cumprod = parts.alphas_cumprod.to(device)
        self.export_every, self.steps = export_every, steps
        self.v2 = parts.text_model.config.hidden_size == 1024  # OpenCLIP ViT-H: SD 2.x (ss_v2 in the file)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"lora": self.network}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.optimizer}

    def model_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def distribute(self, wrap) -> None:
        # the LoRA layers through DDP (their gradients averaged over the ranks); the base stays frozen
        self.call = wrap(self.adapted)

    def loss(self, batch: Batch) -> torch.Tensor:
        """LDM eq. 2 on the frozen base with the LoRA layers attached."""
        if batch.captions is None:
            raise GenpixError("LoRA training needs captions: .txt files beside the pictures or a metadata.jsonl")
        with torch.no_grad():
            posterior = self.parts.vae.encode(batch.images * 2 - 1)
            z0 = (posterior.mean + posterior.std * batch.randn(*posterior.mean.shape[1:])) \
                * self.parts.vae.config.scaling_factor
        t = (batch.rand() * len(self.alphas_cumprod)).long().clamp(max=len(self.alphas_cumprod) - 1)
        eps = batch.randn(*z0.shape[1:])
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
        target = eps if self.parts.prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * z0
        ids = self.parts.tokenizer(list(batch.captions), max_length=77).to(self.device)
        return F.mse_loss(self.call(x_t, t.float(), ids).float(), target.float())

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.network.train()
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def snapshot(self, batch: Batch) -> dict[str, Image.Image]:
        return {}  # sampling a full SD model per snapshot is too slow on CPUs; generate with <lora:NAME:1>

    def evaluate(self, data: ImageDataset) -> dict[str, float]:
        return {}

    def diagnose(self, step: int, data: ImageDataset, out: Path) -> None:
        """Writes the kohya-format file when a checkpoint is due (the trainer's per-step hook)."""
        if step % self.export_every == 0 or step == self.steps:
            export_kohya(self.network, Path(out) / f"{Path(out).name}.safetensors", self.config, step, self.v2)
        return None


def kohya_metadata(config: LoRATrainingConfig, step: int, name: str, v2: bool = False) -> dict[str, str]:
    """sd-scripts' ``ss_*`` header fields that sd-webui and ComfyUI read."""
    return {"ss_network_module": "networks.lora", "ss_network_dim": str(config.rank),
            "ss_network_alpha": str(config.alpha), "ss_output_name": name, "ss_steps": str(step),
            "ss_resolution": f"({config.image_size}, {config.image_size})",
            "ss_base_model_version": "sd_v2" if v2 else "sd_v1", "ss_v2": str(v2),
            "ss_sd_model_name": Path(config.base).name,
            "ss_network_args": json.dumps({"conv_dim": config.rank} if config.targets == "transformer+conv" else {}),
            "ss_training_comment": "genpix train lora"}


def export_kohya(network: LoRANetwork, path: Path, config: LoRATrainingConfig, step: int, v2: bool = False) -> Path:
    """The network's state_dict (already in kohya's names) as an atomically written safetensors file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in network.state_dict().items()}
    metadata = kohya_metadata(config, step, path.stem, v2)
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _task_options(options: Mapping[str, Any], train_config: Any) -> dict[str, Any]:
    return {"export_every": train_config.checkpoint_every, "steps": train_config.steps}


FAMILY = Family(
    "lora", "LoRA for a Stable Diffusion 1.x/2.x checkpoint (Hu et al. 2021), written as a kohya file",
    LoRATrainingConfig, LoRATask, default_lr=1e-4,
    train_defaults={"batch_size": 1, "steps": 1000, "sample_every": 1000, "checkpoint_every": 250},
    task_options=_task_options,
    help={"base": "the Stable Diffusion checkpoint to adapt (.safetensors/.ckpt or a diffusers folder)",
          "tokenizer": "tokenizer folder (vocab.json + merges.txt) for a single file",
          "rank": "LoRA rank r (kohya's network_dim)", "alpha": "LoRA alpha: the scale is alpha / rank",
          "targets": "attn: attention projections; transformer: every linear layer of the transformers "
                     "(kohya's default); transformer+conv: also the 3x3 convolutions (LoCon)",
          "text_encoder": "lora: LoRA layers in the text encoder too; frozen: the U-Net's alone"})
