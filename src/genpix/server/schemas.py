"""The typed request and response bodies of the /sdapi/v1 routes (sd-webui's shapes).

Field names and defaults follow sd-webui's API models (shared/reference/sd-webui-api.md, section 2),
except where ``None`` means "the model's own default" (steps, sampler, CFG scale, size). Unknown
fields are ignored, as sd-webui ignores them; a wrong type is a 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from genpix.pipelines.capabilities import MAX_CFG_SCALE

MAX_SIDE = 4096  # width, height and init images, in pixels
MAX_STEPS = 1000
MAX_BATCH_SIZE = 64
MAX_ITERATIONS = 100
MAX_SEED = 2**53  # seeds stay exact in JavaScript numbers too


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Txt2ImgRequest(_Request):
    prompt: str = ""  # a class-conditional model reads the class name here; "" is unconditional
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, le=MAX_SEED)  # -1 draws one; image i uses seed + i
    subseed: int = -1
    subseed_strength: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    enable_hr: bool = False  # the hires fix (pipelines/hires.py)
    hr_scale: float = Field(2.0, allow_inf_nan=False)
    hr_upscaler: str | None = None  # a latent mode or an upscaler name (GET /upscalers); None: "Latent"
    hr_second_pass_steps: int = Field(0, ge=0, le=MAX_STEPS)
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIDE * 2)
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIDE * 2)
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    denoising_strength: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)  # txt2img: the hires fix's
    restore_faces: bool | None = None  # sd-webui fields genpix does not implement yet: named in info["ignored"]
    tiling: bool | None = None
    sampler_name: str | None = None  # sd-webui names; None: the model's default
    sampler_index: str | None = None  # the older field, read when sampler_name is None
    scheduler: str | None = None  # "Automatic"/None: the model's default
    batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    n_iter: int = Field(1, ge=1, le=MAX_ITERATIONS)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    cfg_scale: float | None = Field(None, ge=0, le=MAX_CFG_SCALE, allow_inf_nan=False)
    eta: float | None = Field(None, ge=0, allow_inf_nan=False)  # for the samplers that take them
    s_churn: float | None = Field(None, ge=0, allow_inf_nan=False)
    s_noise: float | None = Field(None, ge=0, allow_inf_nan=False)
    width: int | None = Field(None, ge=1, le=MAX_SIDE)  # None: the model's size
    height: int | None = Field(None, ge=1, le=MAX_SIDE)
    refiner_checkpoint: str | None = None  # a model title: takes the steps after refiner_switch_at
    refiner_switch_at: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)  # None: 0.8
    override_settings: dict[str, Any] | None = None  # {"sd_model_checkpoint": ...} for this request
    override_settings_restore_afterwards: bool = True
    script_name: str | None = None  # img2img: "outpainting mk2" or "poor man's outpainting" (server/scripts.py)
    script_args: list[Any] | None = None
    send_images: bool = True
    save_images: bool = False


class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[str] | None = None  # base64 PNG/JPEG, or data: URLs
    resize_mode: int = Field(0, ge=0, le=3)  # 1 crops to the aspect ratio first; the others resize
    denoising_strength: float = Field(0.75, ge=0, le=1, allow_inf_nan=False)
    mask: str | None = None  # white = repaint
    mask_blur: int | None = Field(None, ge=0, le=64)
    mask_blur_x: int = Field(4, ge=0, le=64)
    mask_blur_y: int = Field(4, ge=0, le=64)
    inpainting_fill: int = Field(0, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(0, ge=0)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


class GenerationResponse(BaseModel):
    images: list[str]  # base64 PNGs (no data: prefix), each with its infotext
    parameters: dict[str, Any]  # the request, echoed
    info: str  # a JSON string: seeds, all_seeds, infotexts, ...


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str
    sha256: str
    filename: str
    config: str | None = None


class PNGInfoRequest(_Request):
    image: str


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ScriptsList(BaseModel):
    txt2img: list[str] = []
    img2img: list[str] = []
