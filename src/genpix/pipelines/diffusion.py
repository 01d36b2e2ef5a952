"""Pixel-space diffusion genpix trained (``genpix train ddpm``) as parts of the one pipeline:
unconditional, or class-conditional with classifier-free guidance towards a class (the null class
as the unconditional branch; a negative "prompt" names a class to guide away from). Images are in
[-1, 1] for the network, its x0 estimates clipped to that range (pipelines/decoders.py)."""

from __future__ import annotations

import torch

from genpix.config import from_dict
from genpix.diffusion.config import DDPMConfig
from genpix.io.checkpoint import CheckpointError, ModelDir, load_module_weights
from genpix.models.cpu_prepack import prepack_on_cpu
from genpix.models.unet import UNet
from genpix.pipelines.capabilities import Capabilities, Defaults
from genpix.pipelines.conditioning import ClassConditioner, NullConditioner
from genpix.pipelines.decoders import PixelSpace
from genpix.pipelines.parts import Parts
from genpix.pipelines.pipeline import DiffusionPipeline
from genpix.pipelines.safety import CombinedCheck

DDPM_DEFAULTS = Defaults(steps=50, sampler="DDIM", cfg_scale=3.0)


def ddpm_pipeline(unet: UNet, config: DDPMConfig, *, class_names: tuple[str, ...] = (), model_name: str = "ddpm",
                  device: torch.device | str = "cpu", batch_size: int = 64,
                  defaults: Defaults = DDPM_DEFAULTS) -> DiffusionPipeline:
    """A pixel diffusion pipeline from a U-Net and the config it was trained with."""
    device = torch.device(device)
    unet = unet.eval().requires_grad_(False).to(device)
    if config.class_conditional:
        conditioner = ClassConditioner(class_names, lambda labels: {"class_labels": labels}, device)
    else:
        conditioner = NullConditioner()
    parts = Parts(conditioner, config.denoiser(unet), PixelSpace(config.channels), CombinedCheck(()),
                  modules=(("unet", unet),))
    size = config.image_size
    caps = Capabilities("ddpm", model_name, "class" if config.class_conditional else "none", (size, size),
                        channels=config.channels, class_names=tuple(class_names), defaults=defaults,
                        inpaint=True)
    return DiffusionPipeline(parts, caps, batch_size=batch_size, device=device)


def load_diffusion_pipeline(model_dir: ModelDir, device: str | torch.device = "cpu") -> DiffusionPipeline:
    """A ddpm model folder -> pipeline sampling with its EMA weights (role "ema")."""
    config = from_dict(DDPMConfig, model_dir.config["model"], where=f"{model_dir.path}/config.json model")
    role = "ema" if "ema" in model_dir.weights else "unet"
    if role not in model_dir.weights:
        raise CheckpointError(f"{model_dir.path}/model.safetensors has no 'ema' or 'unet' weights")
    unet = UNet(config.unet_config())
    weights = {k: v.float() for k, v in model_dir.weights[role].items()}  # bundled models store fp16
    load_module_weights(unet, weights, f"{model_dir.path}/model.safetensors ({role})")
    class_names = tuple(model_dir.config.get("data", {}).get("class_names") or ())
    if config.class_conditional and len(class_names) != config.num_classes:
        raise CheckpointError(f"{model_dir.path}/config.json: a class-conditional model needs "
                              f"{config.num_classes} names in data.class_names")
    defaults = DDPM_DEFAULTS.overridden(model_dir.config.get("sampling"), f"{model_dir.path}/config.json")
    pipe = ddpm_pipeline(unet, config, class_names=class_names, model_name=model_dir.path.name, device=device,
                         defaults=defaults)
    prepack_on_cpu(pipe.device, dict(pipe.parts.modules)["unet"])  # oneDNN weight layouts (models/cpu_prepack.py)
    return pipe
