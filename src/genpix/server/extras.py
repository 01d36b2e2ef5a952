"""sd-webui's Extras and upscaler routes (shared/reference/sdxl-lora-upscalers.md 4.6):

``POST /sdapi/v1/extra-single-image``, ``POST /extra-batch-images`` (request fields and limits of
sd-webui's ``modules/api/models.py`` ``ExtrasBaseRequest``), ``GET /upscalers``,
``GET /latent-upscale-modes`` and ``GET /realesrgan-models``. Upscales run on the job queue, one
at a time with the generations. The answered PNGs keep the sent picture's text chunks and carry the
``postprocessing`` infotext, as sd-webui's do.
"""

from __future__ import annotations

import base64
import io
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from genpix.pipelines.extras import ExtrasConfig, html_info, png_info, run_extras
from genpix.pipelines.upscale import LATENT_UPSCALE_MODES, MAX_OUTPUT_PIXELS
from genpix.pipelines.upscalers import UpscalerRegistry
from genpix.server.codec import load_image, open_image
from genpix.server.errors import ApiError
from genpix.server.jobs import JobQueue
from genpix.server.limits import Limits, check_input_pixels


FACE_RESTORATION = ("gfpgan_visibility", "codeformer_visibility")  # accepted, not implemented: named in html_info


class ExtrasBaseRequest(BaseModel):
    resize_mode: Literal[0, 1] = 0  # 0: by upscaling_resize; 1: to upscaling_resize_w x _h
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)  # accepted; genpix has no face restorer
    codeformer_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscaling_resize: float = Field(2, ge=1, le=8, allow_inf_nan=False)
    upscaling_resize_w: int = Field(512, ge=1)
    upscaling_resize_h: int = Field(512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = ""  # base64 or a data: URL


class FileData(BaseModel):
    data: str
    name: str


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData]  # noqa: N815 (sd-webui's name)


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float | None


class RealesrganItem(BaseModel):
    name: str
    path: str | None
    scale: int | None


def _config(request: ExtrasBaseRequest) -> ExtrasConfig:
    if request.resize_mode == 1 and request.upscaling_resize_w * request.upscaling_resize_h > MAX_OUTPUT_PIXELS:
        raise ApiError(f"upscaling_resize_w x upscaling_resize_h is over this server's limit of "
                       f"{MAX_OUTPUT_PIXELS} pixels", 413)
    return ExtrasConfig(upscaler_1=request.upscaler_1, upscaler_2=request.upscaler_2,
                        upscaler_2_visibility=request.extras_upscaler_2_visibility,
                        resize_mode=request.resize_mode, scale=request.upscaling_resize,
                        width=request.upscaling_resize_w, height=request.upscaling_resize_h,
                        crop=request.upscaling_crop)


def _check_output(image, config: ExtrasConfig, what: str) -> None:
    """A 413 before any work when the upscaled picture would be over the limit."""
    if config.resize_mode == 0 and config.upscaler_1 != "None":
        pixels = int(image.width * config.scale) * int(image.height * config.scale)
        if pixels > MAX_OUTPUT_PIXELS:
            raise ApiError(f"{what} upscaled by {config.scale:g} would be {pixels} pixels; this server's "
                           f"limit is {MAX_OUTPUT_PIXELS}", 413)


def _encode(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(image))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def _upscale_all(registry: UpscalerRegistry, jobs: JobQueue, request: ExtrasBaseRequest,
                       texts: list[tuple[str, str]], limits: Limits) -> tuple[list[str], str]:
    config = _config(request)
    for name in (config.upscaler_1, config.upscaler_2):
        await run_in_threadpool(registry.find, name)  # a 400 naming the known upscalers, before decoding

    def decode():  # headers first: counts, input pixels and output sizes checked before any decoding
        if len(texts) > limits.max_images:
            raise ApiError(f"{len(texts)} pictures in one request; this server takes at most {limits.max_images} "
                           f"(--max-images)", 413)
        opened = [open_image(text, what) for what, text in texts]
        check_input_pixels([picture.size for picture in opened], limits)
        for picture, (what, _) in zip(opened, texts):
            _check_output(picture, config, what)
        return [load_image(picture, what) for picture, (what, _) in zip(opened, texts)]

    pictures = await run_in_threadpool(decode)

    def job():
        results = [run_extras(picture, registry, config) for picture in pictures]
        return [_encode(image) for image, _ in results], results[-1][1] if results else ""

    images, infotext = await jobs.run("extras", job)
    ignored = [name for name in FACE_RESTORATION if getattr(request, name)]
    note = f"<p>ignored: {', '.join(ignored)} (genpix has no face restorer)</p>" if ignored else ""
    return (images if request.show_extras_results else []), html_info(infotext) + note


def build_extras_router(registry: UpscalerRegistry, jobs: JobQueue, dependencies: list,
                        limits: Limits = Limits()) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", dependencies=dependencies)

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
    async def extra_single_image(request: ExtrasSingleImageRequest):
        images, info = await _upscale_all(registry, jobs, request, [("image", request.image)], limits)
        return {"html_info": info, "image": images[0] if images else None}

    @router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse)
    async def extra_batch_images(request: ExtrasBatchImagesRequest):
        texts = [(f"imageList[{i}] ({item.name})", item.data) for i, item in enumerate(request.imageList)]
        images, info = await _upscale_all(registry, jobs, request, texts, limits)
        return {"html_info": info, "images": images}

    @router.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers():
        return [entry.describe() for entry in registry.entries()]

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes():
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    @router.get("/realesrgan-models", response_model=list[RealesrganItem])
    def realesrgan_models():
        return [{"name": e.name, "path": str(e.path), "scale": e.scale}
                for e in registry.entries() if e.spec is not None and e.spec.real_esrgan]

    return router


__all__ = ["UpscalerRegistry", "build_extras_router"]
