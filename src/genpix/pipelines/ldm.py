"""Latent diffusion genpix trained (``genpix train ldm``) as parts of the one pipeline: the model's
own tau_theta as the conditioner (the learned byte-level transformer, the frozen MiniLM, a class
embedding whose prompt is a class name, or nothing), the cross-attention U-Net behind a discrete
denoiser, its KL autoencoder's latent space, and the prompt blocklist (pipelines/safety.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from genpix.config import from_dict
from genpix.diffusion.denoiser import DiscreteDenoiser
from genpix.diffusion.ldm_config import LDMConfig
from genpix.io.checkpoint import CheckpointError, ModelDir, load_module_weights
from genpix.models.autoencoder import AutoencoderKL
from genpix.models.cpu_prepack import prepack_on_cpu
from genpix.pipelines.capabilities import Capabilities, Defaults
from genpix.pipelines.conditioning import ClassConditioner, LearnedTextConditioner
from genpix.pipelines.decoders import AutoencoderSpace
from genpix.pipelines.parts import LatentUNet, Parts
from genpix.pipelines.pipeline import DiffusionPipeline
from genpix.pipelines.preview import TinyDecoderSpace, find_preview_decoder
from genpix.pipelines.prompt_blocklist import default_checks
from genpix.pipelines.safety import CombinedCheck

LDM_DEFAULTS = Defaults(steps=20, sampler="DPM++ 2M", cfg_scale=5.0)


def _conditioner(model, class_names: tuple[str, ...], device: torch.device):
    tau = model.conditioner
    if tau.cond == "class":
        return ClassConditioner(class_names, lambda labels: {"context": tau(labels)}, device)
    return LearnedTextConditioner(tau, device)  # "none": the zero context (the prompt must be empty)


def _weights(model_dir: ModelDir, role: str, module: torch.nn.Module) -> torch.nn.Module:
    where = f"{model_dir.path}/model.safetensors"
    if role not in model_dir.weights:
        raise CheckpointError(f"{where} has no {role!r} weights")
    load_module_weights(module, {k: v.float() for k, v in model_dir.weights[role].items()}, f"{where} ({role})")
    return module.eval().requires_grad_(False)


def _preview(model_dir: ModelDir, device: torch.device) -> TinyDecoderSpace | None:
    """The distilled preview decoder kept beside the weights (``genpix train preview-decoder``), if any."""
    path = find_preview_decoder(model_dir.path)
    return None if path is None else TinyDecoderSpace.from_file(path, device)


def load_ldm_pipeline(model_dir: ModelDir, device: str | torch.device = "cpu", *, safety_checker: bool = True,
                      blocklist: str | Path | None = None) -> DiffusionPipeline:
    """An ldm model folder -> pipeline with its EMA weights (role "ema") and its autoencoder; the
    safety checks of default_checks (``safety_checker`` False: none)."""
    checks = default_checks(safety_checker, blocklist)
    config = from_dict(LDMConfig, model_dir.config["model"], where=f"{model_dir.path}/config.json model")
    if config.first_stage is None:
        raise CheckpointError(f"{model_dir.path}/config.json: an ldm model needs its autoencoder's config "
                              f"(first_stage)")
    device = torch.device(device)
    model = _weights(model_dir, "ema", config.network()).to(device)
    vae = _weights(model_dir, "first_stage", AutoencoderKL(config.first_stage))
    class_names = tuple(model_dir.config.get("data", {}).get("class_names") or ())
    if config.cond == "class" and len(class_names) != config.num_classes:
        raise CheckpointError(f"{model_dir.path}/config.json: a class-conditional model needs "
                              f"{config.num_classes} names in data.class_names")
    space = AutoencoderSpace(vae, device)
    parts = Parts(_conditioner(model, class_names, device),
                  DiscreteDenoiser(LatentUNet(model.unet), config.alphas_cumprod(), config.prediction), space,
                  CombinedCheck(checks), set_alpha_to_one=False, modules=(("unet", model), ("vae", space.vae)),
                  preview=_preview(model_dir, device))
    side = model.unet.config.sample_size * space.factor
    conditioning = {"class": "class", "none": "none"}.get(config.cond, "text")
    defaults = LDM_DEFAULTS.overridden(model_dir.config.get("sampling"), f"{model_dir.path}/config.json")
    caps = Capabilities("ldm", model_dir.path.name, conditioning, (side, side), channels=vae.config.out_channels,
                        class_names=class_names, size_multiple=max(8, space.factor), inpaint=True,
                        defaults=defaults)
    pipe = DiffusionPipeline(parts, caps, batch_size=4, device=device, info={"prediction": config.prediction})
    prepack_on_cpu(device, model, space.vae)  # oneDNN weight layouts, once (models/cpu_prepack.py)
    return pipe
