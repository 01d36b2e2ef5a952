"""From an sd-webui txt2img/img2img request to genpix's one generation request, and back to
sd-webui's ``info``.

The request is bound leniently (pipelines/capabilities.py): a field the model cannot honour but
that sd-webui clients always send (steps for a VAE, eta for a sampler without it, CFG scale without a
class) is dropped and named in ``info["ignored"]``, as are the sd-webui features genpix does not
implement yet (enable_hr, restore_faces, ...). What would be silently wrong instead is refused with
a 4xx: a size the model cannot make, a prompt for a model with no classes or text, a mask for a
pipeline that cannot inpaint. A mask, its blur, fill and inversion
go to the pipeline (pipelines/masking.py), which pastes the original back outside the mask.
The pipelines' safety checks (pipelines/safety.py, the prompt blocklist by default) make the images
they flag black; ``info["nsfw"]`` lists the flags, one per image, beside sd-webui's fields.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from genpix.diffusion.noise import image_seeds as noise_seeds
from genpix.pipelines.masking import mask_from_picture, pictures_to_batch
from genpix.pipelines.request import GenerationRequest
from genpix.server.catalog import ModelEntry
from genpix.server.errors import ApiError
from genpix.server.jobs import Interrupted, JobQueue, Skipped
from genpix.server.schemas import Img2ImgRequest, Txt2ImgRequest
from genpix.server.settings import RequestSettings
from genpix.version import __version__

AUTOMATIC = ("", "automatic")  # scheduler values that keep the sampler's own schedule


@dataclass
class Generation:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # the last pipeline call's info
    nsfw: list[bool] = field(default_factory=list)  # per image: flagged by a safety check (made black)
    interrupted: bool = False
    subseeds: list[int] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # request fields not honoured (sd-webui's, or not for this model)
    merged_jobs: int = 1  # jobs whose images were made in the same pipeline call (server/batching.py)


def draw_seed(seed: int) -> int:
    """sd-webui's get_fixed_seed: -1 draws a seed."""
    return random.randrange(4294967294) if seed == -1 else seed


def _unimplemented(pipe, request: Txt2ImgRequest, settings: RequestSettings) -> list[str]:
    """sd-webui fields genpix does not implement yet that the request sets to something other than
    their "off" value: reported in ``info["ignored"]``, never dropped in silence (docs/architecture.md);
    with the settings not honoured (server/settings.py), for all models or for this one."""
    given = [name for name, on in (("restore_faces", request.restore_faces), ("tiling", request.tiling)) if on]
    given += list(settings.ignored) + settings.less_work(pipe)[1]
    if isinstance(request, Img2ImgRequest):
        if request.mask is not None and request.inpaint_full_res:
            given.append("inpaint_full_res")
        if request.initial_noise_multiplier not in (None, 1, 1.0):
            given.append("initial_noise_multiplier")
    return given


def generation_request(pipe, request: Txt2ImgRequest,
                       settings: RequestSettings = RequestSettings()) -> GenerationRequest:
    """sd-webui's txt2img fields as genpix's one request (pipelines/request.py), with the request's
    settings (server/settings.py); a size left out is the model's own. For a class-conditional model the
    prompt is a class name (the binder resolves it)."""
    scheduler = (request.scheduler or "").strip()
    sampler = request.sampler_name or request.sampler_index or None
    values = {"prompt": request.prompt, "negative_prompt": request.negative_prompt, "steps": request.steps,
              "sampler": sampler,
              "schedule": None if scheduler.casefold() in AUTOMATIC else scheduler, "cfg_scale": request.cfg_scale,
              "eta": request.eta if request.eta is not None else settings.eta(pipe, sampler),
              "s_churn": request.s_churn, "s_noise": request.s_noise,
              "width": request.width, "height": request.height, "clip_skip": settings.clip_skip,
              "eta_noise_seed_delta": settings.eta_noise_seed_delta,
              **settings.less_work(pipe)[0],
              "subseed_strength": request.subseed_strength,
              "seed_resize_from_h": max(0, request.seed_resize_from_h),
              "noise_schedule": settings.noise_schedule,
              "seed_resize_from_w": max(0, request.seed_resize_from_w), **_hires(request)}
    return GenerationRequest.of(**values)


def _hires(request: Txt2ImgRequest) -> dict[str, Any]:
    """The hires fix's fields (txt2img with enable_hr; its denoising_strength is the second pass's)."""
    if not request.enable_hr or isinstance(request, Img2ImgRequest):
        return {}
    scheduler = (request.hr_scheduler or "").strip()
    return {"enable_hr": True, "hr_scale": request.hr_scale, "hr_upscaler": request.hr_upscaler or None,
            "hr_second_pass_steps": request.hr_second_pass_steps, "hr_resize_x": request.hr_resize_x,
            "hr_resize_y": request.hr_resize_y, "hr_sampler": request.hr_sampler_name or None,
            "hr_schedule": None if scheduler.casefold() in AUTOMATIC else scheduler, "hr_prompt": request.hr_prompt,
            "hr_negative_prompt": request.hr_negative_prompt, "strength": request.denoising_strength}


def mask_blur(request: Img2ImgRequest) -> int:
    """sd-webui's mask_blur, else the larger of mask_blur_x and mask_blur_y."""
    return request.mask_blur if request.mask_blur is not None else max(request.mask_blur_x, request.mask_blur_y)


def img2img_arguments(pipe, entry: ModelEntry, request: Img2ImgRequest, init: list[Image.Image],
                      mask: Image.Image | None) -> dict[str, Any]:
    """init_images (B = 1 or batch_size) at the asked size (the model's own when left out), the
    strength and the mask with its options; the binder refuses what the model cannot do."""
    if len(init) not in (1, request.batch_size):
        raise ApiError(f"got {len(init)} init images for batch_size {request.batch_size}; send 1 or {request.batch_size}")
    caps = pipe.capabilities
    size = (request.width or caps.native_size[0], request.height or caps.native_size[1])
    crop = request.resize_mode == 1
    args: dict[str, Any] = {"init_images": pictures_to_batch(init, size, caps.channels, crop),
                            "strength": request.denoising_strength, "width": size[0], "height": size[1]}
    if mask is not None:
        args.update(mask=pictures_to_batch([mask_from_picture(mask)], size, 1, crop), mask_blur=mask_blur(request),
                    inpainting_fill=request.inpainting_fill, invert_mask=bool(request.inpainting_mask_invert))
    return args


def generate(pipe, entry: ModelEntry, request: Txt2ImgRequest, seed: int, jobs: JobQueue,
             extra: dict[str, Any], settings: RequestSettings = RequestSettings()) -> Generation:
    """n_iter pipeline calls of batch_size images each; image i has seed ``seed + i`` (with a variation
    strength every image keeps the seed and the subseed counts up, as in sd-webui).

    Runs in the job worker. An interrupt keeps the finished batches; a skip drops the current one.
    """
    subseed = draw_seed(request.subseed)
    base = _stepping(pipe, generation_request(pipe, request, settings).but(n=request.batch_size, subseed=subseed,
                                                                           **extra), jobs)
    varied = bool(base.subseed_strength)
    result = Generation(ignored=_unimplemented(pipe, request, settings))
    jobs.begin_batches(request.n_iter)
    size = request.batch_size
    for number in range(request.n_iter):
        try:
            jobs.next_batch(number)
            offset = number * size
            out = pipe.generate(base.but(seed=seed if varied else seed + offset, subseed=subseed + offset),
                                lenient=True)
        except Skipped:
            continue
        except Interrupted:
            result.interrupted = True
            break
        _collect(result, out, slice(None), _class_line(pipe, request))
    return result


def generate_together(pipe, runs: list[tuple[Txt2ImgRequest, int]], jobs: JobQueue,
                      settings: RequestSettings = RequestSettings()) -> list[Generation | None]:
    """Txt2img requests (with their drawn seeds) that agree on everything but seed, subseed and
    batch_size (server/batching.py), all n_iter 1, as one pipeline call; each gets the images, seeds and
    infotexts it gets alone (its own per-image seeds, so its own noise).

    Runs in the job worker. An interrupt or skip (of the first request, the running job) ends the call:
    the first gets its answer alone (interrupted, or no images), the others None (to run again).
    """
    seeds, subseeds = [], []
    for request, seed in runs:  # each as generate() numbers its images
        per_image = noise_seeds(seed, draw_seed(request.subseed), request.subseed_strength, request.batch_size)
        seeds += per_image[0]
        subseeds += per_image[1]
    first = runs[0][0]
    base = generation_request(pipe, first, settings).but(n=len(seeds), seed=seeds[0], subseed=subseeds[0],
                                                         seeds=tuple(seeds), subseeds=tuple(subseeds))
    results = [Generation(ignored=_unimplemented(pipe, request, settings), merged_jobs=len(runs))
               for request, _ in runs]
    jobs.begin_batches(1)
    try:
        jobs.next_batch(0)
        out = pipe.generate(_stepping(pipe, base, jobs), lenient=True)
    except (Skipped, Interrupted) as stop:
        results[0].interrupted = isinstance(stop, Interrupted)
        return [results[0]] + [None] * (len(runs) - 1)
    first_row = 0
    for (request, _), result in zip(runs, results):
        _collect(result, out, slice(first_row, first_row + request.batch_size), _class_line(pipe, request))
        first_row += request.batch_size
    return results


def _stepping(pipe, request: GenerationRequest, jobs: JobQueue) -> GenerationRequest:
    """The request with a step callback that reports to the job queue (where /interrupt and /skip
    take effect), for a diffusion model."""
    if not pipe.capabilities.diffusion:
        return request
    return request.but(callback=lambda info: jobs.step(info.get("step", info["i"] + 1), info.get("total", 0),
                                                       pipe.preview_images, info["denoised"][:1].detach()))


def _class_line(pipe, request: Txt2ImgRequest) -> str:
    """The class, as the infotext's prompt line, for a class-conditional model ("" for the others)."""
    return request.prompt.strip() if pipe.capabilities.conditioning == "class" else ""


def _collect(result: Generation, out, rows: slice, prefix: str) -> None:
    """Add rows ``rows`` of a pipeline output to ``result``."""
    result.images += out.images[rows]
    result.infotexts += [f"{prefix}\n{text}" if prefix else text for text in out.infotexts[rows]]
    result.seeds += list(out.info["seeds"])[rows]
    result.subseeds += list(out.info.get("subseeds", []))[rows]
    result.nsfw += [bool(flag) for flag in out.info.get("nsfw") or [False] * len(out.images)][rows]
    result.info = out.info
    result.ignored += [k for k in out.info.get("ignored", []) if k not in result.ignored]


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
        "subseed": gen.subseeds[0] if gen.subseeds else -1, "all_subseeds": gen.subseeds or [-1] * count,
        "subseed_strength": gen.info.get("subseed_strength", 0),
        "ignored": gen.ignored,  # genpix's: request fields it did not honour (docs/architecture.md)
        "width": width, "height": height,
        "sampler_name": gen.info.get("sampler"), "cfg_scale": gen.info.get("cfg_scale"),
        "steps": gen.info.get("steps"), "batch_size": request.batch_size,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": entry.name, "sd_model_hash": entry.short_hash, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": request.seed_resize_from_w, "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": denoising_strength,
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": gen.infotexts,
        "styles": request.styles or [], "job_timestamp": job_timestamp, "clip_skip": gen.info.get("clip_skip", 1),
        "is_using_inpainting_conditioning": False, "version": f"genpix {__version__}",
        "interrupted": gen.interrupted,
        "nsfw": gen.nsfw,  # genpix's: the safety checks' flags, one per image (pipelines/safety.py)
        "merged_jobs": gen.merged_jobs,  # genpix's: requests made in the same pipeline call (server/batching.py)
    }
