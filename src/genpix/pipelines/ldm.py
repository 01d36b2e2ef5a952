"""Text-to-image with a latent diffusion model genpix trained (``genpix train ldm``).

The Stable Diffusion loop of pipelines/text_to_image.py, reused whole (prompt and negative prompt
through classifier-free guidance, the sd-webui samplers and schedules, img2img, decoding with the
autoencoder, infotexts); only the prompt encoder differs: CLIP's tokenizer and text model give way
to the model's own tau_theta (models/ldm.py), the learned byte-level transformer, the frozen
MiniLM, a class embedding (the prompt names a class) or nothing (the prompt must be empty).
The same safety checks run after decoding (pipelines/safety.py): the prompt blocklist by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from genpix.config import from_dict
from genpix.diffusion.denoiser import DiscreteDenoiser
from genpix.diffusion.ldm_config import LDMConfig
from genpix.errors import GenpixError
from genpix.io.checkpoint import CheckpointError, ModelDir, load_module_weights
from genpix.models.autoencoder import AutoencoderKL
from genpix.models.cpu_prepack import prepack_on_cpu
from genpix.models.ldm import Conditioner, LatentDiffusionModel
from genpix.pipelines.prompt_blocklist import PromptBlocklist
from genpix.pipelines.safety import CombinedCheck, SafetyCheck, default_checks
from genpix.pipelines.text_to_image import StableDiffusionPipeline

DEFAULT_STEPS, DEFAULT_SAMPLER, DEFAULT_CFG_SCALE = 20, "DPM++ 2M", 5.0


class LatentDiffusionPipeline(StableDiffusionPipeline):
    """pipe(prompt, negative_prompt="", steps=20, sampler="DPM++ 2M", cfg_scale=5.0, seed=0, n=1, ...)
    -> PipelineOutput, as :class:`StableDiffusionPipeline` (no clip_skip; a mask inpaints with the latent mask).
    A class-conditional model takes a class name as its prompt ("" is the null class).
    ``safety_checks`` as the SD pipeline's: None is the prompt blocklist alone, () none."""

    family = "ldm"
    # inpaints with the latent mask; class_name: a class model's prompt, as for the other class models
    parameters = (StableDiffusionPipeline.parameters - {"clip_skip"}) | {"class_name"}

    def __init__(self, model: LatentDiffusionModel, vae: AutoencoderKL, alphas_cumprod: torch.Tensor, *,
                 prediction: str = "eps", class_names: tuple[str, ...] = (), model_name: str = "ldm",
                 device: torch.device | str = "cpu", batch_size: int = 4,
                 safety_checks: Sequence[SafetyCheck] | None = None) -> None:
        # StableDiffusionPipeline.__init__ wants a CLIP tokenizer and text model; tau_theta replaces both
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.conditioner: Conditioner = self.model.conditioner
        self.unet = self.model.unet
        self.vae = vae.eval().requires_grad_(False).to(self.device)
        self.prediction, self.model_name, self.batch_size = prediction, model_name, batch_size
        self.class_names = tuple(class_names)
        self.denoiser = DiscreteDenoiser(self._network, alphas_cumprod, prediction)
        self.factor = vae.config.downsampling_factor
        self.safety = CombinedCheck((PromptBlocklist(),) if safety_checks is None else safety_checks)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.vae.config.out_channels, self.default_size, self.default_size

    def encode_prompt(self, prompt: str, clip_skip: int = 1) -> torch.Tensor:
        """tau_theta(prompt): the context (1, L, D) the U-Net attends to."""
        if clip_skip != 1:
            raise GenpixError(f"{self.model_name} has no CLIP text encoder; clip_skip does not apply")
        cond = self.conditioner.cond
        if cond == "class":
            return self.conditioner(self._class_label(prompt))
        if cond == "none" and prompt:
            raise GenpixError(f"{self.model_name} is unconditional (trained with --cond none); it takes no prompt")
        return self.conditioner(self.conditioner.inputs([prompt], device=self.device))

    def _class_label(self, prompt: str) -> torch.Tensor:
        """A class name (case-insensitive) -> its label (1,); "" -> the null class."""
        names = [n.casefold() for n in self.class_names]
        if prompt and prompt.strip().casefold() not in names:
            raise GenpixError(f"unknown class {prompt!r}; this model's classes: {', '.join(self.class_names)}")
        label = names.index(prompt.strip().casefold()) if prompt else len(names)
        return torch.tensor([label], device=self.device)

    def __call__(self, prompt: str = "", negative_prompt: str = "", steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, seed: int = 0, width: int | None = None,
                 height: int | None = None, latents: torch.Tensor | None = None, *,
                 class_name: str | None = None, **options):
        """See :meth:`StableDiffusionPipeline.__call__`; the defaults are this family's
        (20 steps, DPM++ 2M, guidance scale 5). ``class_name`` is the prompt of a class model."""
        if class_name is not None:
            if self.conditioner.cond != "class":
                raise GenpixError(f"{self.model_name} is not class-conditional (--cond {self.conditioner.cond}); "
                                  f"it takes no class")
            if prompt:
                raise GenpixError("give a class or a prompt (the class name), not both")
            prompt = str(class_name)
        return super().__call__(prompt, negative_prompt, DEFAULT_STEPS if steps is None else steps,
                                sampler or DEFAULT_SAMPLER, DEFAULT_CFG_SCALE if cfg_scale is None else cfg_scale,
                                seed, width, height, latents, **options)


def load_ldm_pipeline(model_dir: ModelDir, device: str | torch.device = "cpu", *, safety_checker: bool = True,
                      blocklist: str | Path | None = None) -> LatentDiffusionPipeline:
    """An ldm model folder -> pipeline with its EMA weights (role "ema") and its autoencoder; the
    safety checks of pipelines/safety.py's default_checks (``safety_checker`` False: none)."""
    checks = default_checks(safety_checker, blocklist)
    where = f"{model_dir.path}/model.safetensors"
    config = from_dict(LDMConfig, model_dir.config["model"], where=f"{model_dir.path}/config.json model")
    if config.first_stage is None:
        raise CheckpointError(f"{model_dir.path}/config.json: an ldm model needs its autoencoder's config "
                              f"(first_stage)")
    for role in ("ema", "first_stage"):
        if role not in model_dir.weights:
            raise CheckpointError(f"{where} has no {role!r} weights")
    model = config.network()
    load_module_weights(model, {k: v.float() for k, v in model_dir.weights["ema"].items()}, f"{where} (ema)")
    vae = AutoencoderKL(config.first_stage)
    load_module_weights(vae, {k: v.float() for k, v in model_dir.weights["first_stage"].items()},
                        f"{where} (first_stage)")
    class_names = tuple(model_dir.config.get("data", {}).get("class_names") or ())
    if config.cond == "class" and len(class_names) != config.num_classes:
        raise CheckpointError(f"{model_dir.path}/config.json: a class-conditional model needs "
                              f"{config.num_classes} names in data.class_names")
    pipe = LatentDiffusionPipeline(model, vae, config.alphas_cumprod(), prediction=config.prediction,
                                   class_names=class_names, model_name=model_dir.path.name, device=device,
                                   safety_checks=checks)
    prepack_on_cpu(pipe.device, pipe.model, pipe.vae)  # oneDNN weight layouts, once (models/cpu_prepack.py)
    return pipe
