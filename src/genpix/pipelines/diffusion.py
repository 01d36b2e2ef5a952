"""Generation with a pixel-space diffusion model: unconditional, or class-conditional with
classifier-free guidance. Images come out as (B, C, H, W) in [0, 1]; the model works in [-1, 1]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genpix.config import from_dict
from genpix.diffusion import samplers, schedules
from genpix.diffusion.config import DDPMConfig
from genpix.diffusion.denoiser import CFGDenoiser, ClippedDenoiser
from genpix.diffusion.inpainting import MaskedDenoiser
from genpix.errors import GenpixError
from genpix.io.checkpoint import CheckpointError, ModelDir, load_module_weights
from genpix.io.images import format_infotext, to_pil
from genpix.models.cpu_prepack import prepack_on_cpu
from genpix.models.unet import UNet
from genpix.pipelines import masking
from genpix.pipelines.latent_decoder import seeded_normal
from genpix.pipelines.output import PipelineOutput

DEFAULT_STEPS, DEFAULT_SAMPLER, DEFAULT_CFG_SCALE = 50, "DDIM", 3.0


class DiffusionPipeline:
    """pipe(n=16, seed=0, steps=50, sampler="DDIM", cfg_scale=3.0, class_name="sneaker").

    Image i starts from noise seeded ``seed + i`` and draws its sampler noise from its own
    generator, so it is the same whatever ``n`` or the batch size. Without ``class_name`` a
    class-conditional model samples unconditionally (the null class).
    """

    family = "ddpm"
    # the keyword arguments __call__ takes (what an API may pass on to this pipeline)
    parameters = frozenset({"n", "seed", "steps", "sampler", "cfg_scale", "class_name", "schedule", "eta",
                            "s_churn", "s_noise", "latents", "callback", "init_images", "strength", "mask",
                            "mask_blur", "inpainting_fill", "invert_mask"})

    def __init__(self, unet: UNet, config: DDPMConfig, *, class_names: tuple[str, ...] = (),
                 model_name: str = "ddpm", device: torch.device | str = "cpu", batch_size: int = 64) -> None:
        self.unet, self.config, self.class_names = unet.eval(), config, tuple(class_names)
        self.model_name, self.device, self.batch_size = model_name, torch.device(device), batch_size
        self.denoiser = config.denoiser(self.unet)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it makes (what an img2img input is resized to)."""
        return self.config.channels, self.config.image_size, self.config.image_size

    def class_index(self, name: str | int) -> int:
        """A class name (case-insensitive) or index -> index; unknown names list the classes."""
        if not self.config.class_conditional:
            raise GenpixError(f"{self.model_name} is not class-conditional; it takes no class")
        names = [n.lower() for n in self.class_names]
        if isinstance(name, int) or str(name).isdigit():
            if 0 <= int(name) < self.config.num_classes:
                return int(name)
        elif str(name).lower() in names:
            return names.index(str(name).lower())
        raise GenpixError(f"unknown class {name!r}; this model knows: {', '.join(self.class_names)}")

    def _denoiser(self, labels: torch.Tensor | None, cfg_scale: float):
        """The model's (guided) denoiser with x0 clipped to the data range [-1, 1] (Ho et al. 2020)."""
        if labels is None:
            return ClippedDenoiser(self.denoiser)
        if cfg_scale == 1:
            return ClippedDenoiser(lambda x, sigma: self.denoiser(x, sigma, class_labels=labels))
        null = torch.full_like(labels, self.config.num_classes)
        return ClippedDenoiser(CFGDenoiser(self.denoiser, {"class_labels": labels}, {"class_labels": null},
                                          cfg_scale))

    @torch.no_grad()
    def __call__(self, n: int = 1, seed: int = 0, steps: int | None = None, sampler: str | None = None,
                 cfg_scale: float | None = None, class_name: str | int | None = None, *,
                 schedule: str | None = None, eta: float | None = None, s_churn: float | None = None,
                 s_noise: float | None = None, latents: torch.Tensor | None = None,
                 callback: Callable[[dict[str, Any]], None] | None = None, prompt: str | None = None,
                 negative_prompt: str | None = None, init_images: torch.Tensor | None = None,
                 strength: float = 0.75, mask: torch.Tensor | None = None, mask_blur: int = 0,
                 inpainting_fill: int = 1, invert_mask: bool = False) -> PipelineOutput:
        """Generate ``n`` images; with ``init_images`` (B, C, H, W) in [0, 1] (B = 1 or n), noise
        them to the level ``strength`` of the way to pure noise and denoise them back (SDEdit,
        Meng et al. 2022; seed 003's "reverse engineering"): strength 0 returns the image, 1
        ignores it. ``sampler`` is an sd-webui name, possibly with a schedule suffix ("DPM++ 2M
        Karras"); ``schedule`` None or "Automatic" is the sampler's default (samplers.resolve);
        eta, s_churn and s_noise go to the samplers that take them (others refuse them).

        Inpainting: ``mask`` (1 or n, 1, H, W) in [0, 1], 1 = repaint, with the init images; the
        rest of each image is held to the original noised to each step's sigma (the latent mask,
        diffusion/inpainting.py) and pasted back at the end; ``mask_blur``, ``inpainting_fill``
        (0 fill, 1 original, 2 latent noise, 3 latent nothing) and ``invert_mask`` as sd-webui's
        (pipelines/masking.py)."""
        if prompt or negative_prompt:
            raise GenpixError(f"{self.model_name} is not text-conditioned; use --class for class models")
        if n < 1:
            raise GenpixError(f"number of images must be at least 1, got {n}")
        steps = DEFAULT_STEPS if steps is None else steps
        sampler = sampler or DEFAULT_SAMPLER
        fn, schedule = samplers.resolve(sampler, schedule)  # unknown names fail before any work
        samplers.check_steps(steps)
        options = {k: v for k, v in (("eta", eta), ("s_churn", s_churn), ("s_noise", s_noise)) if v is not None}
        samplers.check_options(fn, options)
        sigmas = self.denoiser.sigmas(steps, schedule)
        originals = init_images
        if init_images is not None:
            sigmas, init_images = self._img2img_start(sigmas, init_images, strength, n)
        if mask is not None:
            mask = self._prepare_mask(mask, originals, n, mask_blur, inpainting_fill, invert_mask)
        unchanged = mask is not None and masking.nothing_to_repaint(mask)  # all black: no sampling
        label = None if class_name is None else self.class_index(class_name)
        if cfg_scale is not None and label is None:
            raise GenpixError("--cfg-scale needs a class (--class NAME) to guide towards")
        cfg_scale = DEFAULT_CFG_SCALE if cfg_scale is None else cfg_scale
        seeds = [seed + i for i in range(n)]
        c, s = self.config.channels, self.config.image_size
        noise = seeded_normal((c, s, s), seeds) if latents is None else latents
        parts = []
        total = (len(sigmas) - 1) * -(-n // self.batch_size)
        progress = None if callback is None else _counting(callback, total)
        for start in range(0, n, self.batch_size):
            chunk = slice(start, start + self.batch_size)
            if unchanged:
                parts.append(originals.float().expand(n, -1, -1, -1)[chunk].cpu())
                continue
            generators = [torch.Generator().manual_seed(sd) for sd in seeds[chunk]]
            eps = noise[chunk].to(self.device)
            if init_images is None:
                x = eps * (sigmas[0].item() ** 2 + 1) ** 0.5
            else:  # x_t = x0 + sigma_t eps in the sigma form (q(x_t | x0), Ho et al. eq. 4)
                x = init_images[chunk].to(self.device) + eps * sigmas[0]
            labels = None if label is None else torch.full((x.shape[0],), label, device=self.device)
            denoiser = self._denoiser(labels, cfg_scale)
            if mask is not None:  # the latent mask on the pixel grid (diffusion/inpainting.py)
                original = originals.float().expand(n, -1, -1, -1)[chunk]
                known, content, grid = masking.masked_start(original, mask[chunk], inpainting_fill,
                                                            lambda im: im.to(self.device) * 2 - 1, generators)
                x, denoiser = content + eps * sigmas[0], MaskedDenoiser(denoiser, known, grid, eps)
            x0 = x if len(sigmas) < 2 else fn(denoiser, x, sigmas, generator=generators, callback=progress,
                                               **options)
            if mask is None:
                parts.append(self.to_unit_range(x0))
            else:  # the original pasted back outside the (blurred) mask
                images = self.to_unit_range(denoiser.finish(x0, sigmas[-1]))
                parts.append(masking.overlay(images, original, mask[chunk]))
        images = torch.cat(parts)
        params = {"Steps": steps, "Sampler": fn.name, "Schedule type": schedules.SCHEDULE_LABELS[schedule],
                  "Denoising strength": strength if init_images is not None else None,
                  **(masking.inpainting_params(mask_blur, inpainting_fill) if mask is not None else {}),
                  "CFG scale": cfg_scale if label is not None else None, "Eta": eta, "Sigma churn": s_churn,
                  "Sigma noise": s_noise,
                  "Class": self.class_names[label] if label is not None else None,
                  "Size": f"{s}x{s}", "Model": self.model_name, "Family": "ddpm"}
        infotexts = [format_infotext({**params, "Seed": sd}) for sd in seeds]
        info = {"seeds": seeds, "model": self.model_name, "family": "ddpm", "steps": steps, "sampler": fn.name,
                "schedule": schedule,
                "cfg_scale": params["CFG scale"], "class_name": params["Class"]}
        return PipelineOutput(to_pil(images), images, infotexts, info)


    def to_unit_range(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space images (B, C, H, W) in [-1, 1] (a result, or a step's ``denoised``) -> [0, 1] on the CPU."""
        return ((x.float() + 1) / 2).clamp(0, 1).cpu()

    def preview_images(self, denoised: torch.Tensor) -> list:
        """PIL pictures of a step callback's ``denoised`` (B, C, H, W): the live preview a server shows."""
        return to_pil(self.to_unit_range(denoised))

    def _prepare_mask(self, mask: torch.Tensor, init: torch.Tensor | None, n: int, blur: int, fill: int,
                      invert: bool) -> torch.Tensor:
        """The checked mask (n, 1, S, S), inverted and blurred (pipelines/masking.py)."""
        s = self.config.image_size
        if init is None:
            raise GenpixError("a mask needs the image to inpaint (init_images)")
        if mask.ndim != 4 or mask.shape[0] not in (1, n) or tuple(mask.shape[1:]) != (1, s, s):
            raise GenpixError(f"mask must be (1 or {n}, 1, {s}, {s}) in [0, 1], got {tuple(mask.shape)}")
        masking.check_inpainting(blur, fill)
        return masking.prepare_mask(mask, blur, invert).expand(n, -1, -1, -1)

    def _img2img_start(self, sigmas: torch.Tensor, init_images: torch.Tensor, strength: float,
                       n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tail of ``sigmas`` that SDEdit runs, and the init images in [-1, 1], one per sample.

        As sd-webui: of ``steps`` steps, the last ``int(strength * steps)`` run (at least one).
        """
        if not 0 <= strength <= 1:
            raise GenpixError(f"strength must be between 0 and 1, got {strength}")
        c, s = self.config.channels, self.config.image_size
        if init_images.ndim != 4 or tuple(init_images.shape[1:]) != (c, s, s):
            raise GenpixError(f"init image must be (B, {c}, {s}, {s}) for this model, "
                              f"got {tuple(init_images.shape)}")
        if init_images.shape[0] not in (1, n):
            raise GenpixError(f"got {init_images.shape[0]} init images for {n} samples")
        x0 = (init_images.float() * 2 - 1).expand(n, -1, -1, -1)
        steps = len(sigmas) - 1
        run = min(steps, int(strength * steps))
        return sigmas[steps - run:], x0  # run == 0 leaves [0]: no step, the image comes back


def _counting(callback: Callable[[dict[str, Any]], None], total: int) -> Callable[[dict[str, Any]], None]:
    """Wrap a step callback so each call also carries "step" (1-based, over all chunks) and "total"."""
    count = [0]

    def step(info: dict[str, Any]) -> None:
        count[0] += 1
        callback({**info, "step": count[0], "total": total})

    return step


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
    pipe = DiffusionPipeline(unet.to(device), config, class_names=class_names,
                             model_name=model_dir.path.name, device=device)
    prepack_on_cpu(pipe.device, pipe.unet)  # oneDNN weight layouts, once (models/cpu_prepack.py)
    return pipe
