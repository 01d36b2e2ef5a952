"""The /sdapi/v1 routes with sd-webui's request and response shapes (shared/reference/sd-webui-api.md).

Generation and model switches go through the job queue (one at a time, in order); everything else
answers at once, also while a job runs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Body
from starlette.concurrency import run_in_threadpool

from genpix.diffusion import samplers, schedules
from genpix.io.images import INFOTEXT_KEY, parse_infotext
from genpix.server import generation
from genpix.server.catalog import ModelCatalog, ModelEntry
from genpix.server.codec import encode_png, load_image, open_image, text_chunks
from genpix.server.errors import ApiError
from genpix.server.jobs import JobQueue
from genpix.server.limits import Limits, check_input_pixels, check_request
from genpix.server.options import Options
from genpix.server.outputs import OutputFolder
from genpix.server.schemas import (GenerationResponse, Img2ImgRequest, PNGInfoRequest, PNGInfoResponse,
                                   ProgressResponse, SamplerItem, SchedulerItem, ScriptsList, SDModelItem,
                                   Txt2ImgRequest)
from genpix.server.scripts import IMG2IMG_SCRIPTS, find_script

logger = logging.getLogger("genpix.server")


@dataclass
class ServerContext:
    """What the routes share: built once per app by create_app, never at import time."""

    catalog: ModelCatalog
    jobs: JobQueue
    options: Options
    outputs: OutputFolder | None = None
    limits: Limits = Limits()

    def model_for(self, request: Txt2ImgRequest) -> ModelEntry:
        """override_settings.sd_model_checkpoint for this request, else the current model.

        The shared model is not switched here: with ``override_settings_restore_afterwards: false``
        :func:`_generate` switches it only once the request has succeeded, so a refused request
        changes nothing for the next ones."""
        name = (request.override_settings or {}).get("sd_model_checkpoint")
        if name is None:
            return self.options.model
        if not isinstance(name, str):
            raise ApiError("override_settings.sd_model_checkpoint must be a model title", 422)
        return self.catalog.find(name)


def _save_outputs(ctx: ServerContext, kind: str, result) -> list[str]:
    """--outputs-dir: save the images; a full or unwritable disk is a warning in the answer, not a 500
    (the images are still returned)."""
    try:
        ctx.outputs.save(kind, result.images, result.seeds, result.infotexts)
    except OSError as error:
        message = f"the images were not saved under --outputs-dir ({error.strerror or type(error).__name__})"
        logger.warning(message)
        return [message]
    return []


async def _generate(ctx: ServerContext, kind: str, request: Txt2ImgRequest, init=None, mask=None) -> dict:
    """Queue one txt2img/img2img job and shape its answer."""
    script = find_script(request, kind)  # outpainting (server/scripts.py), or None
    entry = ctx.model_for(request)
    check_request(request, ctx.limits, entry.image_size)
    seed = generation.draw_seed(request.seed)
    warnings: list[str] = []

    def job():
        pipe = ctx.catalog.pipeline(entry)
        run, pictures, picture_mask = request, init, mask
        if script is not None:  # the canvas and the mask of its new border
            run, canvas, picture_mask = script.prepare(pipe, entry.channels or 3, request, init)
            pictures = [canvas]
        extra = {} if pictures is None else generation.img2img_arguments(pipe, entry, run, pictures, picture_mask)
        result = generation.generate(pipe, entry, run, seed, ctx.jobs, extra)
        if script is not None:
            result.images = script.finish(result.images, canvas, picture_mask, result.nsfw)
        if ctx.outputs is not None and result.images:
            warnings.extend(_save_outputs(ctx, kind, result))
        return result, ctx.jobs.job_timestamp

    result, timestamp = await ctx.jobs.run(kind, job)
    if not request.override_settings_restore_afterwards:
        ctx.options.model = entry  # the request succeeded: its model stays the current one
    strength = getattr(request, "denoising_strength", None) if init is not None else None
    info = generation.processed_info(request, entry, result, seed, timestamp, strength)
    if warnings:
        info["warnings"] = warnings  # genpix's: what went wrong beside the images (e.g. a full disk)
    images = await run_in_threadpool(
        lambda: [encode_png(im, text) for im, text in zip(result.images, result.infotexts)])
    parameters = request.model_dump()
    if isinstance(request, Img2ImgRequest) and not request.include_init_images:
        parameters["init_images"], parameters["mask"] = None, None
    return {"images": images if request.send_images else [], "parameters": parameters, "info": json.dumps(info)}


def _decode_pictures(ctx: ServerContext, request: Img2ImgRequest) -> tuple[list, Any]:
    """The init images and mask, decoded only once their header sizes fit the limits together."""
    texts = {f"init_images[{i}]": text for i, text in enumerate(request.init_images)}
    if request.mask is not None:
        texts["mask"] = request.mask
    opened = {what: open_image(text, what) for what, text in texts.items()}
    check_input_pixels([image.size for image in opened.values()], ctx.limits)
    pictures = [load_image(image, what) for what, image in opened.items()]
    return (pictures[:-1], pictures[-1]) if request.mask is not None else (pictures, None)


def _memory() -> dict[str, Any]:
    """sd-webui's /memory: RAM from the OS, CUDA from torch (or an error entry on a CPU machine)."""
    page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    ram = {"free": free, "used": pages * page - free, "total": pages * page}
    if not torch.cuda.is_available():
        return {"ram": ram, "cuda": {"error": "CUDA is not available"}}
    free_gpu, total_gpu = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()
    return {"ram": ram, "cuda": {
        "system": {"free": free_gpu, "used": total_gpu - free_gpu, "total": total_gpu},
        "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
        "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                      "peak": stats.get("allocated_bytes.all.peak", 0)},
        "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                     "peak": stats.get("reserved_bytes.all.peak", 0)},
        "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                     "peak": stats.get("inactive_split_bytes.all.peak", 0)},
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}}


def build_router(ctx: ServerContext, dependencies: list) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", dependencies=dependencies)

    @router.post("/txt2img", response_model=GenerationResponse)
    async def txt2img(request: Txt2ImgRequest):
        return await _generate(ctx, "txt2img", request)

    @router.post("/img2img", response_model=GenerationResponse)
    async def img2img(request: Img2ImgRequest):
        if not request.init_images:
            raise ApiError("Init image not found", 404)
        check_request(request, ctx.limits, ctx.model_for(request).image_size)  # counts before decoding
        init, mask = await run_in_threadpool(_decode_pictures, ctx, request)
        return await _generate(ctx, "img2img", request, init, mask)

    @router.get("/progress", response_model=ProgressResponse)
    def progress(skip_current_image: bool = False):
        value, eta, state, preview = ctx.jobs.progress()
        image = None
        if preview is not None and not skip_current_image and ctx.options.values["live_previews_enable"]:
            render, denoised = preview
            image = encode_png(render(denoised)[0])
        return {"progress": value, "eta_relative": eta, "state": state, "current_image": image, "textinfo": None}

    @router.post("/interrupt")
    def interrupt():
        ctx.jobs.interrupt()
        return {}

    @router.post("/skip")
    def skip():
        ctx.jobs.skip()
        return None

    @router.get("/options")
    def get_options() -> dict[str, Any]:
        return ctx.options.as_dict()

    @router.post("/options")
    async def set_options(values: dict[str, Any] = Body(...)):
        name = values.get("sd_model_checkpoint")
        if name is not None:
            if not isinstance(name, str):
                raise ApiError("sd_model_checkpoint must be a model title", 422)
            entry = await run_in_threadpool(ctx.catalog.find, name)
            await ctx.jobs.run("load model", lambda: ctx.catalog.pipeline(entry))  # after queued jobs
            ctx.options.model = entry
        ctx.options.update(values)
        return None

    @router.get("/sd-models", response_model=list[SDModelItem])
    def sd_models():
        return [entry.describe() for entry in ctx.catalog.entries]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints():
        ctx.catalog.refresh()
        return None

    @router.get("/samplers", response_model=list[SamplerItem])
    def sampler_list():
        return [{"name": name, "aliases": [], "options": {}} for name in samplers.names()]

    @router.get("/schedulers", response_model=list[SchedulerItem])
    def scheduler_list():
        return [{"name": name, "label": label, "aliases": None} for name, label in schedules.SCHEDULE_LABELS.items()]

    @router.post("/png-info", response_model=PNGInfoResponse)
    def png_info(request: PNGInfoRequest):
        image = open_image(request.image)
        check_input_pixels([image.size], ctx.limits)  # before its pixels are decoded
        items = text_chunks(load_image(image))
        text = items.pop(INFOTEXT_KEY, "")
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    @router.get("/memory")
    def memory():
        return _memory()

    @router.get("/scripts", response_model=ScriptsList)
    def scripts():
        return {"txt2img": [], "img2img": IMG2IMG_SCRIPTS}

    @router.get("/script-info")
    def script_info():
        return []

    for path in ("/sd-vae", "/prompt-styles", "/face-restorers", "/hypernetworks"):  # /loras: server/networks.py
        router.add_api_route(path, lambda: [], methods=["GET"])

    return router
