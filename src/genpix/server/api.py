"""The /sdapi/v1 routes with sd-webui's request and response shapes (shared/reference/sd-webui-api.md).

Generation and model switches go through the job queue (one at a time, in order); everything else
answers at once, also while a job runs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, Body
from starlette.concurrency import run_in_threadpool

from genpix.diffusion import samplers, schedules
from genpix.errors import GenpixError
from genpix.io.images import INFOTEXT_KEY, parse_infotext
from genpix.io.styles import PromptStyle, apply_styles, read_styles
from genpix.pipelines.xyz_grid import plot as xyz_plot
from genpix.server import generation
from genpix.server.batching import Batcher, merge_key
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
from genpix.server.settings import RequestSettings, request_settings
from genpix.server.vaes import VaeFolder
from genpix.server.xyz_script import XYZ, cell_request, enlarged, parse_xyz

logger = logging.getLogger("genpix.server")


@dataclass
class ServerContext:
    """What the routes share: built once per app by create_app, never at import time."""

    catalog: ModelCatalog
    jobs: JobQueue
    options: Options
    outputs: OutputFolder | None = None
    limits: Limits = Limits()
    vaes: VaeFolder = field(default_factory=lambda: VaeFolder(None))
    styles_file: Path | None = None  # sd-webui's styles.csv (io/styles.py), read at each use
    cmd_flags: dict[str, Any] = field(default_factory=dict)  # /cmd-flags: how the server was started
    batcher: Batcher = field(init=False)  # merges queued txt2img jobs (server/batching.py)

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.jobs, self.limits.max_merged_images, self.limits.merge_wait_ms)

    def styles(self) -> dict[str, PromptStyle]:
        """The styles of --styles-file (none when it is missing); a broken file is a 500 naming it."""
        if self.styles_file is None:
            return {}
        try:
            return read_styles(self.styles_file)
        except GenpixError as error:
            raise ApiError(str(error), 500) from None

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


def _answered(ctx: ServerContext, kind: str, result) -> tuple[Any, str, list[str]]:
    """A finished job's (result, job timestamp, warnings), its images saved under --outputs-dir."""
    warnings = _save_outputs(ctx, kind, result) if ctx.outputs is not None and result.images else []
    return result, ctx.jobs.job_timestamp, warnings


def _styled(ctx: ServerContext, request: Txt2ImgRequest) -> tuple[Txt2ImgRequest, list[str]]:
    """The request with its ``styles`` applied to prompt and negative prompt (sd-webui's processing);
    an unknown style is skipped, as sd-webui skips it, and named ("styles.NAME") for info["ignored"]."""
    if not request.styles:
        return request, []
    styles = ctx.styles()
    known = [name for name in request.styles if name in styles]
    prompt, negative = apply_styles(request.prompt, request.negative_prompt, known, styles)
    return (request.model_copy(update={"prompt": prompt, "negative_prompt": negative}),
            [f"styles.{name}" for name in request.styles if name not in styles])


def _run_settings(ctx: ServerContext, request: Txt2ImgRequest, entry: ModelEntry,
                  ignored: list[str]) -> RequestSettings:
    """The request's settings (server/settings.py); a VAE file for a model that takes none is ignored."""
    settings = request_settings(ctx.options, ctx.vaes, request.override_settings)
    if settings.vae is not None and not ctx.catalog.takes_vae(entry):
        settings, ignored = replace(settings, vae=None), [*ignored, "sd_vae"]
    return replace(settings, ignored=settings.ignored + tuple(ignored)) if ignored else settings


def _pipeline(ctx: ServerContext, entry: ModelEntry, settings: RequestSettings):
    """The model's loaded pipeline, with the settings' VAE file in place of its own."""
    return ctx.catalog.pipeline(entry) if settings.vae is None else ctx.catalog.pipeline(entry, settings.vae.path)


def _refiner(ctx: ServerContext, request: Txt2ImgRequest) -> dict[str, Any]:
    """sd-webui's refiner_checkpoint (a model title) and refiner_switch_at as the request's ``refiner``
    (pipelines/refiner.py), loaded in the job; {} without one."""
    name = (getattr(request, "refiner_checkpoint", None) or "").strip()
    if not name or name.casefold() == "none":
        return {}
    entry = ctx.catalog.find(name)
    switch = request.refiner_switch_at if request.refiner_switch_at is not None else 0.8
    return {"refiner": entry, "refiner_switch_at": switch}


async def _generate(ctx: ServerContext, kind: str, request: Txt2ImgRequest, init=None, mask=None) -> dict:
    """Queue one txt2img/img2img job and shape its answer. Everything a request names (model, settings,
    VAE, refiner, script) is checked here, before the job: a refused request changes nothing."""
    script = find_script(request, kind)  # outpainting (server/scripts.py), or None
    entry = ctx.model_for(request)
    request, unknown_styles = _styled(ctx, request)
    settings = _run_settings(ctx, request, entry, unknown_styles)
    refiner = _refiner(ctx, request)
    check_request(request, ctx.limits, entry.image_size)
    seed = generation.draw_seed(request.seed)

    def job():
        pipe = _pipeline(ctx, entry, settings)
        run, pictures, picture_mask = request, init, mask
        if script is not None:  # the canvas and the mask of its new border
            run, canvas, picture_mask = script.prepare(pipe, entry.channels or 3, request, init)
            pictures = [canvas]
        extra = {} if pictures is None else generation.img2img_arguments(pipe, entry, run, pictures, picture_mask)
        if refiner:
            extra.update(refiner, refiner=ctx.catalog.pipeline(refiner["refiner"]))
        result = generation.generate(pipe, entry, run, seed, ctx.jobs, extra, settings)
        if script is not None:
            result.images = script.finish(result.images, canvas, picture_mask, result.nsfw)
        return _answered(ctx, kind, result)

    def together(runs: list[tuple[Txt2ImgRequest, int]]) -> list:
        made = generation.generate_together(_pipeline(ctx, entry, settings), runs, ctx.jobs, settings)
        return [None if result is None else _answered(ctx, kind, result) for result in made]

    key = merge_key(request, entry, settings)  # None: img2img, a script, a refiner, ... run alone
    if key is None:
        result, timestamp, warnings = await ctx.jobs.run(kind, job)
    else:
        result, timestamp, warnings = await ctx.batcher.run(kind, key, request.batch_size, (request, seed), together)
    if not request.override_settings_restore_afterwards:  # the request succeeded: its model and settings stay
        ctx.options.model = entry
        ctx.options.update(request.override_settings or {})  # checked before the job (server/settings.py)
    strength = getattr(request, "denoising_strength", None) if init is not None else None
    info = generation.processed_info(request, entry, result, seed, timestamp, strength)
    if settings.vae is not None:
        info["sd_vae_name"] = settings.vae.model_name
    if warnings:
        info["warnings"] = warnings  # genpix's: what went wrong beside the images (e.g. a full disk)
    images = await run_in_threadpool(
        lambda: [encode_png(im, text) for im, text in zip(result.images, result.infotexts)])
    parameters = request.model_dump()
    if isinstance(request, Img2ImgRequest) and not request.include_init_images:
        parameters["init_images"], parameters["mask"] = None, None
    return {"images": images if request.send_images else [], "parameters": parameters, "info": json.dumps(info)}


async def _generate_xyz(ctx: ServerContext, request: Txt2ImgRequest) -> dict:
    """sd-webui's X/Y/Z plot (server/xyz_script.py): every cell checked before the one job that runs them."""
    plot = parse_xyz(request, ctx.catalog.find)
    request = request.model_copy(update={"seed": generation.draw_seed(request.seed)})  # sd-webui's fix_seed
    planned = []
    for cell in plot.cells():
        run = cell_request(request, cell.overrides)
        entry = ctx.model_for(run)
        run, unknown_styles = _styled(ctx, run)
        check_request(run, ctx.limits, entry.image_size)
        planned.append((cell, run, entry, _run_settings(ctx, run, entry, unknown_styles)))
    made: dict[int, tuple] = {}

    def job():
        shown = iter(planned)

        def generate(overrides):
            _, run, entry, settings = next(shown)  # plot() runs the cells in the planned order
            pipe = _pipeline(ctx, entry, settings)
            result = generation.generate(pipe, entry, run, run.seed, ctx.jobs, {}, settings)
            if not result.images:
                raise ApiError("the X/Y/Z plot was interrupted", 409)
            picture = enlarged(result.images[0])
            made[id(picture)] = (result.images[0], result.infotexts[0], result.seeds[0], result.ignored)
            return picture

        return (xyz_plot(generate, plot.x, plot.y, plot.z, draw_legend=plot.draw_legend, margin=plot.margin),
                ctx.jobs.job_timestamp)

    done, timestamp = await ctx.jobs.run("txt2img", job)
    cells = [made[id(picture)] for picture in done.images]
    result = generation.Generation(images=[done.grid], infotexts=[cells[0][1]], seeds=[c[2] for c in cells],
                                   ignored=sorted({k for c in cells for k in c[3]}))
    if plot.include_lone_images:
        result.images += [c[0] for c in cells]
        result.infotexts += [c[1] for c in cells]
    info = generation.processed_info(request, ctx.model_for(request), result, request.seed, timestamp)
    info["index_of_first_image"] = 1
    images = await run_in_threadpool(
        lambda: [encode_png(im, text) for im, text in zip(result.images, result.infotexts)])
    return {"images": images if request.send_images else [], "parameters": request.model_dump(),
            "info": json.dumps(info)}


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
    _generation_routes(router, ctx)
    _settings_routes(router, ctx)
    _list_routes(router, ctx)
    return router


def _generation_routes(router: APIRouter, ctx: ServerContext) -> None:
    """txt2img, img2img and the running job's progress, interrupt and skip."""

    @router.post("/txt2img", response_model=GenerationResponse)
    async def txt2img(request: Txt2ImgRequest):
        if (request.script_name or "").strip().casefold() == XYZ:
            return await _generate_xyz(ctx, request)
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
        value, eta, state, _ = ctx.jobs.progress()
        image = None
        if not skip_current_image and ctx.options.values["live_previews_enable"]:
            image = ctx.jobs.current_image(encode_png)  # rendered once per step, whoever polls (server/jobs.py)
        return {"progress": value, "eta_relative": eta, "state": state, "current_image": image, "textinfo": None}

    @router.post("/interrupt")
    def interrupt():
        ctx.jobs.interrupt()
        return {}

    @router.post("/skip")
    def skip():
        ctx.jobs.skip()
        return None


def _settings_routes(router: APIRouter, ctx: ServerContext) -> None:
    """/options, the checkpoints and the VAE files."""

    @router.get("/options")
    def get_options() -> dict[str, Any]:
        return ctx.options.as_dict()

    @router.post("/options")
    async def set_options(values: dict[str, Any] = Body(...)):
        checked = ctx.options.checked(values)  # every value first: a refused body sets nothing
        name = values.get("sd_model_checkpoint")
        if name is not None:
            if not isinstance(name, str):
                raise ApiError("sd_model_checkpoint must be a model title", 422)
            entry = await run_in_threadpool(ctx.catalog.find, name)
            await ctx.jobs.run("load model", lambda: ctx.catalog.pipeline(entry))  # after queued jobs
            ctx.options.model = entry
        ctx.options.update(checked)
        ctx.jobs.preview_every = ctx.options.values["show_progress_every_n_steps"]
        return None

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return ctx.cmd_flags

    @router.get("/sd-vae")
    def sd_vae():
        return [vae.describe() for vae in ctx.vaes.files]

    @router.post("/refresh-vae")
    def refresh_vae():
        ctx.vaes.refresh()
        return None

    @router.get("/prompt-styles")
    def prompt_styles():
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in ctx.styles().values()]

    @router.post("/unload-checkpoint")
    async def unload_checkpoint():
        await ctx.jobs.run("unload model", ctx.catalog.unload)  # after the queued jobs, as a model switch
        return None

    @router.post("/reload-checkpoint")
    async def reload_checkpoint():
        entry = ctx.options.model
        await ctx.jobs.run("load model", lambda: ctx.catalog.pipeline(entry))
        return None


def _list_routes(router: APIRouter, ctx: ServerContext) -> None:
    """The lists (models, samplers, schedulers, scripts, ...), png-info and memory."""

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
        return {"txt2img": [XYZ], "img2img": IMG2IMG_SCRIPTS}

    @router.get("/script-info")
    def script_info():
        return []

    for path in ("/face-restorers", "/hypernetworks"):  # genpix has neither (docs); /loras: server/networks.py
        router.add_api_route(path, lambda: [], methods=["GET"])
