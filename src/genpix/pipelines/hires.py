"""The hires fix: sd-webui's two-pass txt2img (modules/processing.py StableDiffusionProcessingTxt2Img).

1. txt2img at the asked size, kept in the model's space;
2. upscaled to the second pass's size (:func:`~genpix.pipelines.capabilities.hires_size`): a latent
   mode ("Latent", "Latent (bicubic antialiased)", ...) interpolates the latents; any other upscaler
   (None / Lanczos / Nearest, or an ESRGAN-type file, pipelines/upscalers.py) decodes, upscales the
   pictures and the second pass encodes them again;
3. the second pass is img2img at that size from the same seeds (fresh noise of the new size): with
   n = hr_second_pass_steps or steps, a schedule of int(n / min(strength, 0.999)) steps whose last n
   run (sd-webui's setup_img2img_steps), with hr_sampler / hr_schedule / hr_prompt when given.

The infotext is the first pass's with sd-webui's hires keys (Denoising strength, Hires upscale or
Hires resize, Hires steps, Hires upscaler, Hires sampler, Hires prompt).
"""

from __future__ import annotations

import torch

from genpix.io.images import to_pil
from genpix.pipelines.capabilities import Plan, bind, hires_size
from genpix.pipelines.masking import pictures_to_batch
from genpix.pipelines.output import PipelineOutput
from genpix.pipelines.request import GenerationRequest
from genpix.pipelines.upscale import LATENT_UPSCALE_MODES, upscale_image, upscale_latent

DEFAULT_UPSCALER = "Latent"  # sd-webui's hr_upscaler default


def second_pass_steps(request: GenerationRequest) -> tuple[int, int]:
    """(schedule length, steps that run) of the second pass."""
    run = request.hr_second_pass_steps or request.steps
    return int(run / min(request.strength, 0.999)), run


def upscaled_start(pipe, request: GenerationRequest, latents: torch.Tensor, size: tuple[int, int]) -> dict:
    """The second pass's init: latents interpolated (latent modes) or pictures upscaled."""
    name = request.hr_upscaler or DEFAULT_UPSCALER
    space = pipe.parts.space
    width, height = size
    if name in LATENT_UPSCALE_MODES:
        return {"init_latents": upscale_latent(latents, name, height // space.factor, width // space.factor)}
    upscaler = pipe.upscaler_registry().get(name)
    pictures = [upscale_image(picture, upscaler, size=size) for picture in to_pil(space.decode(latents))]
    return {"init_images": pictures_to_batch(pictures, size, space.channels)}


def hires_notes(request: GenerationRequest, first: GenerationRequest) -> dict:
    """sd-webui's infotext keys for the hires fix."""
    resized = request.hr_resize_x or request.hr_resize_y
    return {"Denoising strength": request.strength,
            "Hires upscale": None if resized else request.hr_scale,
            "Hires resize": f"{request.hr_resize_x}x{request.hr_resize_y}" if resized else None,
            "Hires steps": request.hr_second_pass_steps or None,
            "Hires upscaler": request.hr_upscaler or DEFAULT_UPSCALER,
            "Hires sampler": request.hr_sampler if request.hr_sampler not in (None, first.sampler) else None,
            "Hires prompt": request.hr_prompt if request.hr_prompt not in ("", first.prompt) else None,
            "Hires negative prompt": request.hr_negative_prompt
            if request.hr_negative_prompt not in ("", first.negative_prompt) else None}


def hires_fix(pipe, plan: Plan) -> PipelineOutput:
    """Both passes of a bound txt2img plan with ``enable_hr`` (pipelines/pipeline.py calls this)."""
    request = plan.request
    size = hires_size(request, pipe.capabilities)
    latents = pipe.sample_latents(plan)
    total, run = second_pass_steps(request)
    second = request.but(
        enable_hr=False, width=size[0], height=size[1], steps=total, strength=min(1.0, (run + 0.5) / total),
        sampler=request.hr_sampler or request.sampler, schedule=request.hr_schedule or plan.schedule,
        prompt=request.hr_prompt or request.prompt, negative_prompt=request.hr_negative_prompt or request.negative_prompt,
        latents=None, seed_resize_from_h=0, seed_resize_from_w=0,
        **upscaled_start(pipe, request, latents, size))
    out = pipe.run(bind(second, pipe.capabilities))
    return pipe.make_output(plan, out.tensors, out.info.get("nsfw"), hires_notes(request, request))
