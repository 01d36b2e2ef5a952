"""The one diffusion pipeline: parts passed in, one request in, pictures out.

Parts (pipelines/parts.py): a conditioner (prompt or class -> the network's conditioning), a
denoiser D(x, sigma, **cond) -> x0 (network + parameterisation + discretisation, Karras et al.
2022), a space (pixels, or a KL autoencoder's latents, Rombach et al. 2022) and the safety checks.
:meth:`DiffusionPipeline.generate` binds a request (pipelines/capabilities.py), encodes the
conditions, and runs txt2img, img2img (SDEdit, Meng et al. 2022) or inpainting
(pipelines/modes.py) chunk by chunk; image i draws everything random from one generator seeded
seed + i, in diffusers' order, so it never depends on the batch.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch

from genpix.diffusion import schedules
from genpix.errors import GenpixError
from genpix.io.images import format_infotext, to_pil
from genpix.pipelines import masking, modes
from genpix.pipelines.capabilities import Capabilities, Plan, bind
from genpix.pipelines.extra_networks import activated, network_notes
from genpix.pipelines.output import PipelineOutput
from genpix.pipelines.parts import Parts, with_noise_schedule
from genpix.pipelines.refiner import refiner_stage
from genpix.pipelines.request import GenerationRequest

SD_FAMILIES = ("sd", "sdxl")  # checkpoints whose infotext, as sd-webui's, names no family


class DiffusionPipeline:
    """pipe(prompt="", negative_prompt="", steps=None, sampler=None, cfg_scale=None, seed=0,
    width=None, height=None, latents=None, **fields) -> PipelineOutput; ``fields`` are those of
    :class:`~genpix.pipelines.request.GenerationRequest` (n, class_name, init_images, mask, ...)."""

    def __init__(self, parts: Parts, capabilities: Capabilities, *, batch_size: int = 4,
                 device: torch.device | str = "cpu", info: dict[str, Any] | None = None) -> None:
        self.parts, self.capabilities, self.batch_size = parts, capabilities, batch_size
        self.device = torch.device(device)
        self.extra_info = dict(info or {})
        self.upscalers_dir: str | None = None  # the hires fix's upscaler files (None: sd-webui's models/ESRGAN)
        self._upscalers = None

    # --- what callers read -----------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.capabilities.model_name

    @property
    def family(self) -> str:
        return self.capabilities.family

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.capabilities.class_names

    @property
    def prediction(self) -> str:
        """The network's parameterisation: "eps", "v" or "x0"."""
        return self.parts.denoiser.prediction

    @property
    def default_size(self) -> int:
        return self.capabilities.native_size[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it makes by default (what an img2img input is resized to)."""
        width, height = self.capabilities.native_size
        return self.capabilities.channels, height, width

    def module(self, role: str) -> torch.nn.Module:
        """The network with this role ("unet", "text_encoder", "vae")."""
        modules = dict(self.parts.modules)
        if role not in modules:
            raise GenpixError(f"{self.model_name} has no {role!r} module; it has: {', '.join(modules)}")
        return modules[role]

    def upscaler_registry(self):
        """The named upscalers the hires fix can use (pipelines/upscalers.py), found on first use."""
        from genpix.pipelines.upscalers import DEFAULT_DIR, UpscalerRegistry

        if self._upscalers is None:
            self._upscalers = UpscalerRegistry(self.upscalers_dir or DEFAULT_DIR, device=self.device)
        return self._upscalers

    def encode_prompt(self, prompt: str, clip_skip: int = 1) -> torch.Tensor:
        """The context (1, L, D) the U-Net attends to for ``prompt`` (text-conditioned models), as
        generation encodes it (with the colour hint where the model has a colour head)."""
        if self.capabilities.conditioning != "text":
            raise GenpixError(f"{self.model_name} ({self.family}) is not text-conditioned")
        with torch.no_grad():
            return self.parts.conditioner.encode_pair(prompt, "", clip_skip)[0]["context"]

    def encode_prompts(self, prompt: str, negative_prompt: str, clip_skip: int = 1):
        """(cond, uncond, padded) contexts of equal length (pipelines/conditioning.py)."""
        cond, uncond, notes = self.parts.conditioner.encode_pair(prompt, negative_prompt, clip_skip)
        return cond["context"], uncond["context"], bool(notes.get("Pad conds"))

    def preview_images(self, denoised: torch.Tensor) -> list:
        """PIL pictures of a step callback's ``denoised`` (the server's live preview): decoded by the
        tiny preview decoder where the model has one (pipelines/preview.py), else by its own."""
        with torch.no_grad():
            return to_pil((self.parts.preview or self.parts.space).decode(denoised))

    # --- generation ------------------------------------------------------------------------------
    def __call__(self, prompt: str = "", negative_prompt: str = "", steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, seed: int = 0,
                 width: int | None = None, height: int | None = None, latents: torch.Tensor | None = None,
                 **fields: Any) -> PipelineOutput:
        request = GenerationRequest.of(prompt=prompt, negative_prompt=negative_prompt, steps=steps, sampler=sampler,
                                       cfg_scale=cfg_scale, seed=seed, width=width, height=height, latents=latents,
                                       **fields)
        return self.generate(request)

    @torch.no_grad()
    def generate(self, request: GenerationRequest, *, lenient: bool = False) -> PipelineOutput:
        """Bind ``request`` (``lenient``: options the model cannot honour are listed in
        ``info["ignored"]`` instead of refused) and generate its ``n`` images."""
        plan = bind(request, self.capabilities, lenient=lenient)
        pipe = self._on_noise_schedule(plan.request.noise_schedule)
        with activated(pipe.parts, plan.request):  # <lora:...> tags and embeddings (pipelines/extra_networks.py)
            if plan.request.enable_hr:
                from genpix.pipelines.hires import hires_fix

                return hires_fix(pipe, plan)
            return pipe.run(plan)

    def _on_noise_schedule(self, noise_schedule: str) -> DiffusionPipeline:
        """This pipeline, or a shallow copy whose denoiser samples on ``noise_schedule`` (the shared
        one never changes, so concurrent requests on other schedules are safe)."""
        parts = with_noise_schedule(self.parts, noise_schedule)
        if parts is self.parts:
            return self
        pipe = copy.copy(self)
        pipe.parts = parts
        return pipe

    def run(self, plan: Plan) -> PipelineOutput:
        """Generate a bound plan's images (txt2img, img2img or inpainting)."""
        request = plan.request
        mask = None
        if request.mask is not None:
            masking.check_inpainting(request.mask_blur, request.inpainting_fill)
            mask = masking.prepare_mask(request.mask, request.mask_blur, request.invert_mask)
        cond, uncond, notes = self._conditions(plan)
        sigmas = modes.sigmas_for(self.parts, plan)
        refiner = refiner_stage(self, plan, sigmas)  # None without a refiner (pipelines/refiner.py)
        if refiner is not None:
            notes = {**notes, "Refiner": request.refiner.model_name, "Refiner switch at": request.refiner_switch_at}
        unchanged = mask is not None and masking.nothing_to_repaint(mask)  # all black: no sampling
        total = (len(sigmas) - 1) * -(-request.n // self.batch_size)
        progress = None if request.callback is None else _counting(request.callback, total)
        parts = []
        for first in range(0, request.n, self.batch_size):
            rows = slice(first, first + self.batch_size)
            if unchanged:
                parts.append(modes.rows(request.init_images, request.n, rows).float().cpu())
                continue
            parts.append(modes.run_chunk(self.parts, plan, rows, sigmas, (cond, uncond, refiner), mask, progress,
                                         self.device))
        images, nsfw = self._check_safety(torch.cat(parts), request)
        return self.make_output(plan, images, nsfw, notes)

    def sample_latents(self, plan: Plan) -> torch.Tensor:
        """A txt2img plan's sampled x0 (n, C, h, w) in the model's space, not decoded (the hires
        fix's first pass)."""
        conds = self._conditions(plan)[:2]
        sigmas = modes.sigmas_for(self.parts, plan)
        total = (len(sigmas) - 1) * -(-plan.request.n // self.batch_size)
        progress = None if plan.request.callback is None else _counting(plan.request.callback, total)
        return torch.cat([modes.denoise_chunk(self.parts, plan, slice(first, first + self.batch_size), sigmas, conds,
                                              None, progress, self.device)
                          for first in range(0, plan.request.n, self.batch_size)])

    def _conditions(self, plan: Plan) -> tuple[dict, dict, dict[str, Any]]:
        """(cond, uncond, infotext notes), each (1, ...): prompt and negative prompt, or class and
        null class; ``prompt_embeds`` in place of the encoded prompt."""
        request, conditioner = plan.request, self.parts.conditioner
        text = request.class_name or "" if self.capabilities.conditioning == "class" else request.prompt
        if request.prompt_embeds is None:
            return conditioner.encode_pair(text, request.negative_prompt, request.clip_skip)
        uncond = conditioner.encode(request.negative_prompt, request.clip_skip)
        cond = {"context": request.prompt_embeds.to(self.device)}
        if cond["context"].shape != uncond.get("context", cond["context"]).shape:
            raise GenpixError(f"prompt_embeds must have the negative prompt's shape {tuple(uncond['context'].shape)}, "
                              f"got {tuple(cond['context'].shape)}")
        return {**uncond, **cond}, uncond, {}

    def _check_safety(self, images: torch.Tensor, request: GenerationRequest) -> tuple[torch.Tensor, list | None]:
        """The safety checks (diffusers' run_safety_checker): flagged images become black."""
        safety = self.parts.safety
        if not safety.checks:
            return images, None
        checked = safety.run(images, [request.prompt] * len(images))
        if any(checked.flags):
            warnings.warn(f"potential NSFW content was detected in {sum(checked.flags)} of {len(images)} images by "
                          f"the {' and the '.join(checked.flagged_by)}: they were replaced by black images "
                          f"(try another prompt or seed)", stacklevel=3)
        return checked.images, checked.flags

    def make_output(self, plan: Plan, images: torch.Tensor, nsfw: list | None, notes: dict[str, Any]) -> PipelineOutput:
        request, caps = plan.request, self.capabilities
        seeds, subseeds = modes.image_seeds(request)
        resized = request.seed_resize_from_h > 0 and request.seed_resize_from_w > 0
        inpainting = request.mask is not None
        params = {"Steps": request.steps, "Sampler": request.sampler,
                  "Schedule type": schedules.SCHEDULE_LABELS[plan.schedule], "CFG scale": request.cfg_scale,
                  **{label: plan.sampler_options.get(key) for key, label in
                     (("eta", "Eta"), ("s_churn", "Sigma churn"), ("s_noise", "Sigma noise"))}}
        after = {"Size": f"{request.width}x{request.height}", "Model": caps.model_name,
                 "Family": None if caps.family in SD_FAMILIES else caps.family, "Class": request.class_name,
                 "Denoising strength": request.strength if request.init is not None else None,
                 **(masking.inpainting_params(request.mask_blur, None if caps.inpainting_model else
                                              request.inpainting_fill) if inpainting else {}),
                 "Clip skip": request.clip_skip if request.clip_skip != 1 else None, **notes, **network_notes(),
                 "Noise Schedule": schedules.NOISE_SCHEDULE_LABELS[self.parts.noise_schedule]  # sd-webui's key
                 if self.parts.noise_schedule != "default" else None,
                 "Token merging ratio": request.token_merging_ratio or None,  # sd-webui's key; pipelines/fast.py
                 "DeepCache interval": request.deepcache_interval or None,
                 "DeepCache block": request.deepcache_block or None, "Tiny decode": request.tiny_decode or None}
        text = caps.conditioning == "text"
        variation = {"Seed resize from": f"{request.seed_resize_from_w}x{request.seed_resize_from_h}" if resized
                     else None, "ENSD": request.eta_noise_seed_delta or None}
        infotexts = [format_infotext({**params, "Seed": s, **({"Variation seed": v, "Variation seed strength":
                                                              request.subseed_strength} if request.subseed_strength
                                                             else {}), **variation, **after},
                                     request.prompt if text else "", request.negative_prompt if text else "")
                     for s, v in zip(seeds, subseeds)]
        info = {"seeds": seeds, "subseeds": subseeds, "subseed_strength": request.subseed_strength, "prompt": request.prompt, "negative_prompt": request.negative_prompt,
                "class_name": request.class_name, "model": caps.model_name, "family": caps.family,
                "steps": request.steps, "sampler": request.sampler, "schedule": plan.schedule,
                "cfg_scale": request.cfg_scale, "width": request.width, "height": request.height,
                "clip_skip": request.clip_skip, "strength": request.strength if request.init is not None
                else None, "nsfw": nsfw, "ignored": list(plan.ignored), **self.extra_info}
        return PipelineOutput(to_pil(images), images, infotexts, info)


def _counting(callback: Callable[[dict[str, Any]], None], total: int) -> Callable[[dict[str, Any]], None]:
    """Wrap a step callback so each call also carries "step" (1-based, over all chunks) and "total"."""
    count = [0]

    def step(info: dict[str, Any]) -> None:
        count[0] += 1
        callback({**info, "step": count[0], "total": total})

    return step
