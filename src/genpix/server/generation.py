"""From an sd-webui txt2img/img2img request to pipeline calls, and back to sd-webui's ``info``.

A field reaches a pipeline only if the pipeline lists it in ``parameters``; a field it does not
take is ignored, as sd-webui ignores unknown fields (a VAE has no steps). What would be silently
wrong instead is refused with a 4xx: a size the model cannot make, a prompt for a model with no
classes or text, a mask for a pipeline that cannot inpaint. A mask, its blur, fill and inversion
go to the pipeline (pipelines/masking.py), which pastes the original back outside the mask.
The pipelines' safety checks (pipelines/safety.py, the prompt blocklist by default) make the images
they flag black; ``info["nsfw"]`` lists the flags, one per image, beside sd-webui's fields.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

import genpix
from genpix.diffusion import samplers
from genpix.pipelines.masking import mask_from_picture, pictures_to_batch
from genpix.server.catalog import ModelEntry
from genpix.server.errors import ApiError
from genpix.server.jobs import Interrupted, JobQueue, Skipped
from genpix.server.schemas import Img2ImgRequest, Txt2ImgRequest

AUTOMATIC = ("", "automatic")  # scheduler values that keep the sampler's own schedule
SAMPLER_OPTIONS = ("eta", "s_churn", "s_noise")  # request fields that are options of some samplers


@dataclass
class Generation:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # the last pipeline call's info
    nsfw: list[bool] = field(default_factory=list)  # per image: flagged by a safety check (made black)
    interrupted: bool = False


def draw_seed(seed: int) -> int:
    """sd-webui's get_fixed_seed: -1 draws a seed."""
    return random.randrange(4294967294) if seed == -1 else seed


def _size(entry: ModelEntry, takes: frozenset, request: Txt2ImgRequest) -> tuple[int, int]:
    """(width, height) to make; a model with one size refuses any other."""
    if "width" in takes or entry.image_size is None:
        return request.width or 512, request.height or 512
    size = entry.image_size
    width, height = request.width or size, request.height or size
    if (width, height) != (size, size):
        raise ApiError(f"{entry.name} makes {size}x{size} images, not {width}x{height}; "
                       f"send width and height {size}, or leave them out")
    return width, height


def pipeline_arguments(pipe, entry: ModelEntry, request: Txt2ImgRequest) -> dict[str, Any]:
    """The keyword arguments of one pipeline call (without n, seed and callback)."""
    takes = frozenset(getattr(pipe, "parameters", ()))
    args: dict[str, Any] = {}
    width, height = _size(entry, takes, request)
    if "width" in takes:
        args["width"], args["height"] = width, height
    prompt = request.prompt.strip()
    if "prompt" in takes:
        args["prompt"], args["negative_prompt"] = request.prompt, request.negative_prompt
    elif prompt:
        if "class_name" not in takes or not getattr(pipe, "class_names", None):
            raise ApiError(f"{entry.name} is conditioned on neither text nor classes; send an empty prompt")
        pipe.class_index(prompt)  # an unknown class: a 400 that lists the classes
        args["class_name"] = prompt
    if "steps" in takes and request.steps is not None:
        args["steps"] = request.steps
    sampler = request.sampler_name or request.sampler_index
    if "sampler" in takes and sampler:
        args["sampler"] = sampler  # sd-webui names, "DPM++ 2M Karras" too: the pipeline resolves them
        # eta, s_churn, s_noise reach the samplers that take them, as in sd-webui (an unknown name: a 400)
        sampler_options = samplers.resolve(sampler)[0].options
        for key in SAMPLER_OPTIONS:
            value = getattr(request, key)
            if value is not None and key in takes and key in sampler_options:
                args[key] = value
    if "schedule" in takes and (request.scheduler or "").strip().casefold() not in AUTOMATIC:
        args["schedule"] = request.scheduler
    guided = "prompt" in takes or "class_name" in args
    if "cfg_scale" in takes and request.cfg_scale is not None and guided:
        args["cfg_scale"] = request.cfg_scale
    return args


def mask_blur(request: Img2ImgRequest) -> int:
    """sd-webui's mask_blur, else the larger of mask_blur_x and mask_blur_y."""
    return request.mask_blur if request.mask_blur is not None else max(request.mask_blur_x, request.mask_blur_y)


def img2img_arguments(pipe, entry: ModelEntry, request: Img2ImgRequest, init: list[Image.Image],
                      mask: Image.Image | None) -> dict[str, Any]:
    """init_images (B = 1 or batch_size), strength and, where the pipeline inpaints, the mask."""
    takes = frozenset(getattr(pipe, "parameters", ()))
    family = getattr(pipe, "family", "model")
    if "init_images" not in takes:
        raise ApiError(f"{entry.name} ({family}) cannot do img2img; use a diffusion model")
    if len(init) not in (1, request.batch_size):
        raise ApiError(f"got {len(init)} init images for batch_size {request.batch_size}; send 1 or {request.batch_size}")
    size = _size(entry, takes, request)
    channels = entry.channels or 3
    crop = request.resize_mode == 1
    args: dict[str, Any] = {"init_images": pictures_to_batch(init, size, channels, crop),
                            "strength": request.denoising_strength}
    if mask is not None:
        if "mask" not in takes:
            raise ApiError(f"{entry.name} ({family}) cannot inpaint: its pipeline takes no mask; "
                           f"leave out 'mask' for plain img2img")
        args["mask"] = pictures_to_batch([mask_from_picture(mask)], size, 1, crop)
        for key, value in (("mask_blur", mask_blur(request)), ("inpainting_fill", request.inpainting_fill),
                           ("invert_mask", bool(request.inpainting_mask_invert))):
            if key in takes:
                args[key] = value
    return args


def generate(pipe, entry: ModelEntry, request: Txt2ImgRequest, seed: int, jobs: JobQueue,
             extra: dict[str, Any]) -> Generation:
    """n_iter pipeline calls of batch_size images each; image i has seed ``seed + i``.

    Runs in the job worker. An interrupt keeps the finished batches; a skip drops the current one.
    """
    takes = frozenset(getattr(pipe, "parameters", ()))
    args = {**pipeline_arguments(pipe, entry, request), **extra}
    preview = getattr(pipe, "preview_images", None)
    if "callback" in takes:
        args["callback"] = lambda info: jobs.step(info.get("step", info["i"] + 1), info.get("total", 0),
                                                  preview, info["denoised"][:1].detach())
    prefix = request.prompt.strip() if "prompt" not in takes else ""  # a class name, as the prompt line
    result = Generation()
    jobs.begin_batches(request.n_iter)
    size = request.batch_size
    for number in range(request.n_iter):
        try:
            jobs.next_batch(number)
            out = pipe(n=size, seed=seed + number * size, **args)
        except Skipped:
            continue
        except Interrupted:
            result.interrupted = True
            break
        result.images += out.images
        result.infotexts += [f"{prefix}\n{text}" if prefix else text for text in out.infotexts]
        result.seeds += list(out.info.get("seeds", range(seed + number * size, seed + (number + 1) * size)))
        result.nsfw += [bool(flag) for flag in out.info.get("nsfw") or [False] * len(out.images)]
        result.info = out.info
    return result


def processed_info(request: Txt2ImgRequest, entry: ModelEntry, gen: Generation, seed: int,
                   job_timestamp: str, denoising_strength: float | None = None) -> dict[str, Any]:
    """sd-webui's ``Processed.js()``: what a client reads from ``info`` (the real seeds among it)."""
    width, height = gen.images[0].size if gen.images else (request.width or entry.image_size,
                                                           request.height or entry.image_size)
    count = len(gen.images)
    return {
        "prompt": request.prompt, "all_prompts": [request.prompt] * count,
        "negative_prompt": request.negative_prompt, "all_negative_prompts": [request.negative_prompt] * count,
        "seed": gen.seeds[0] if gen.seeds else seed, "all_seeds": gen.seeds,
        "subseed": -1, "all_subseeds": [-1] * count, "subseed_strength": 0,
        "width": width, "height": height,
        "sampler_name": gen.info.get("sampler"), "cfg_scale": gen.info.get("cfg_scale"),
        "steps": gen.info.get("steps"), "batch_size": request.batch_size,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": entry.name, "sd_model_hash": entry.short_hash, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": denoising_strength,
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": gen.infotexts,
        "styles": request.styles or [], "job_timestamp": job_timestamp, "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": f"genpix {genpix.__version__}",
        "interrupted": gen.interrupted,
        "nsfw": gen.nsfw,  # genpix's: the safety checks' flags, one per image (pipelines/safety.py)
    }
