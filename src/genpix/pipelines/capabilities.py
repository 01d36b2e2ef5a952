"""What a loaded model can do, and the one binding step from a request to a plan.

:class:`Capabilities` is typed (how the model is conditioned, whether it samples with a diffusion
sampler, which sizes it makes, whether it inpaints, how many CLIP layers it has). :func:`bind`
checks a :class:`~genpix.pipelines.request.GenerationRequest` against them and fills in the
model's defaults; the CLI, ``genpix.load_pipeline(...)(...)`` and the HTTP server all call it, so an
option is refused (or, for HTTP clients that send sd-webui's full set of fields, reported as
ignored) the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from genpix.diffusion import samplers, schedules
from genpix.diffusion.samplers import SamplerInfo
from genpix.errors import GenpixError
from genpix.pipelines.prompt_text import check_prompt_text
from genpix.pipelines.request import GenerationRequest

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
MAX_HIRES_SCALE = 8.0
MAX_HIRES_PIXELS = 4096 * 4096  # per image, after the hires fix's upscale
MAX_CFG_SCALE = 100.0  # also the HTTP schema's bound (server/schemas.py)
SAMPLING_FIELDS = ("steps", "sampler", "schedule", "cfg_scale", "eta", "s_churn", "s_noise")
SAMPLER_OPTIONS = ("eta", "s_churn", "s_noise")
MICRO_FIELDS = ("original_size", "crop_top_left", "target_size", "aesthetic_score", "negative_aesthetic_score")
VARIATION_FIELDS = ("subseed_strength", "seed_resize_from_h", "seed_resize_from_w", "eta_noise_seed_delta")
# pipelines/fast.py; off when falsy
LESS_WORK_FIELDS = ("deepcache_interval", "deepcache_block", "token_merging_ratio", "tiny_decode")


class UnsupportedOption(GenpixError):
    """A request option the model cannot honour; ``named(label)`` words it for a surface (``--clip-skip``)."""

    def __init__(self, caps: Capabilities, option: str, why: str) -> None:
        self.caps, self.option, self.why = caps, option, why
        super().__init__(self.named(option))

    def named(self, label: str) -> str:
        return f"{self.caps.model_name} ({self.caps.family}) takes no {label}: {self.why}"


@dataclass(frozen=True)
class Defaults:
    """A family's sampling defaults (what a request's None means)."""

    steps: int
    sampler: str
    cfg_scale: float

    def overridden(self, section: Mapping[str, Any] | None, where: str) -> Defaults:
        """These defaults under a model's own ``sampling`` section of config.json (written by
        ``genpix export --steps/--sampler/--cfg-scale``: the settings its trainer measured best)."""
        return replace(self, **checked_sampling(section, where)) if section else self


def checked_sampling(section: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A ``sampling`` section (steps, sampler, cfg_scale; any of them) checked as binding will use it;
    an unknown key or a bad value is a one-line error naming ``where``."""
    if not isinstance(section, Mapping) or set(section) - {"steps", "sampler", "cfg_scale"}:
        raise GenpixError(f"{where}: the sampling section takes steps, sampler and cfg_scale, got {section!r}")
    steps, sampler, cfg_scale = (section.get(k) for k in ("steps", "sampler", "cfg_scale"))
    try:
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int):
                raise GenpixError(f"steps must be a whole number, got {steps!r}")
            samplers.check_steps(steps)
        if sampler is not None:
            if not isinstance(sampler, str):
                raise GenpixError(f"sampler must be a sampler's name, got {sampler!r}")
            samplers.resolve(sampler)  # "DPM++ 2M Karras" keeps its schedule: bound per request
        if cfg_scale is not None and (isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float))
                                      or not 0 <= cfg_scale <= MAX_CFG_SCALE):
            raise GenpixError(f"cfg_scale must be a number from 0 to {MAX_CFG_SCALE:g}, got {cfg_scale!r}")
    except GenpixError as error:
        raise GenpixError(f"{where}: sampling: {error}") from None
    return {**section, **({"cfg_scale": float(cfg_scale)} if cfg_scale is not None else {})}


@dataclass(frozen=True)
class Capabilities:
    family: str
    model_name: str
    conditioning: Literal["none", "class", "text"]
    native_size: tuple[int, int]  # (width, height) it makes when a request leaves the size out
    channels: int = 3
    class_names: tuple[str, ...] = ()
    defaults: Defaults | None = None  # None: no diffusion sampler (VAE, GAN)
    size_multiple: int = 0  # > 0: any size that is a multiple of it; 0: the native size only
    inpaint: bool = False
    inpainting_model: bool = False  # a 9-channel U-Net (inpaints with its own conditioning)
    clip_layers: int = 0  # layers of a CLIP text encoder (the range of clip_skip); 0: none
    micro_conditioning: bool = False  # SDXL's size, crop and aesthetic-score conditioning
    zero_terminal_snr: bool = False  # its discrete schedule can be rescaled to zero terminal SNR (SD 1.x/2.x/XL)

    @property
    def diffusion(self) -> bool:
        return self.defaults is not None


@dataclass(frozen=True)
class Plan:
    """A request bound to a model: every default filled in, names resolved."""

    request: GenerationRequest  # steps, cfg_scale, width, height, strength resolved
    sampler: SamplerInfo | None = None
    schedule: str | None = None
    sampler_options: dict = field(default_factory=dict)
    label: int | None = None  # the class, for class-conditional models
    guided: bool = False  # classifier-free guidance runs (a condition to guide towards, scale != 1)
    inpainting_model: bool = False  # a mask goes to a 9-channel U-Net (not the latent mask)
    ignored: tuple[str, ...] = ()  # options dropped because the model cannot honour them (lenient binding)


def class_index(caps: Capabilities, name: str | int) -> int:
    """A class name (case-insensitive) or index -> index; unknown names list the classes."""
    folded = [c.casefold() for c in caps.class_names]
    if isinstance(name, int) or str(name).strip().isdigit():
        if 0 <= int(name) < len(folded):
            return int(name)
    elif str(name).strip().casefold() in folded:
        return folded.index(str(name).strip().casefold())
    raise GenpixError(f"unknown class {name!r}; this model knows: {', '.join(caps.class_names)}")


def bind(request: GenerationRequest, caps: Capabilities, *, lenient: bool = False) -> Plan:
    """The plan for ``request`` on a model with ``caps``. An option the model cannot honour is a
    one-line error naming it; with ``lenient`` (HTTP: sd-webui clients send every field) the
    harmless ones (sampling options for a VAE, clip skip without CLIP, ...) are dropped and listed
    in ``Plan.ignored`` instead."""
    ignored: list[str] = []

    def refuse(name: str, why: str) -> None:
        if not lenient:
            raise UnsupportedOption(caps, name, why)
        ignored.append(name)

    _check_count_and_seed(request)
    request, label = _bind_conditioning(request, caps)
    if request.clip_skip != 1 and caps.clip_layers == 0:
        refuse("clip_skip", "it has no CLIP text encoder")
        request = request.but(clip_skip=1)
    elif not 1 <= request.clip_skip <= max(1, caps.clip_layers):
        raise GenpixError(f"clip_skip must be between 1 and {caps.clip_layers} (sd-webui's Clip skip), "
                          f"got {request.clip_skip}")
    if request.refiner is not None and (not caps.diffusion or not 0 < request.refiner_switch_at <= 1):
        raise GenpixError("a refiner needs a diffusion model and refiner_switch_at in (0, 1], got "
                          f"{request.refiner_switch_at}" if caps.diffusion else
                          f"{caps.model_name} ({caps.family}) generates in one pass; it takes no refiner")
    if not caps.micro_conditioning:
        for name in MICRO_FIELDS:
            if getattr(request, name) is not None:
                refuse(name, "micro-conditioning is SDXL's")
                request = request.but(**{name: None})
    noise_schedule = schedules.noise_schedule_key(request.noise_schedule)
    if noise_schedule != "default" and not caps.zero_terminal_snr:
        refuse("noise_schedule", "only Stable Diffusion's discrete training schedule is rescaled")
        noise_schedule = "default"
    request = request.but(noise_schedule=noise_schedule)
    if request.enable_hr and not (caps.diffusion and caps.size_multiple):
        refuse("enable_hr", "the hires fix needs a diffusion model that makes any size")
        request = request.but(enable_hr=False)
    request = _bind_images(request, caps)
    if not caps.diffusion:
        for name in SAMPLING_FIELDS:
            if getattr(request, name) is not None:
                refuse(name, "it generates in one pass, without a sampler")
                request = request.but(**{name: None})
        for name in VARIATION_FIELDS:
            if getattr(request, name):
                refuse(name, "variation noise is for diffusion models")
                request = request.but(**{name: 0})
        for name in LESS_WORK_FIELDS:
            if getattr(request, name):
                refuse(name, "it has no U-Net to cache or merge tokens in, and one decoder")
                request = request.but(**{name: 0})
        return Plan(request, label=label, ignored=tuple(ignored))
    guidable = caps.conditioning == "text" or label is not None
    if request.cfg_scale is not None and not guidable:
        refuse("cfg_scale", "guidance needs a class to guide towards (give a class)")
        request = request.but(cfg_scale=None)
    return _bind_sampling(request, caps, label, guidable, ignored, lenient)


def _check_count_and_seed(request: GenerationRequest) -> None:
    if request.n < 1:
        raise GenpixError(f"number of images must be at least 1, got {request.n}")
    low, high = SEED_RANGE
    if not low <= request.seed or not request.seed + request.n - 1 <= high:
        raise GenpixError(f"seed must be between {low} and {high} (image i uses seed + i), got {request.seed}")


def _bind_conditioning(request: GenerationRequest, caps: Capabilities) -> tuple[GenerationRequest, int | None]:
    """Prompt, negative prompt and class checked against how the model is conditioned."""
    prompt = check_prompt_text(request.prompt or "", "prompt")
    negative = check_prompt_text(request.negative_prompt or "", "negative prompt")
    request = request.but(prompt=prompt, negative_prompt=negative)
    if caps.conditioning == "text":
        if request.class_name not in (None, ""):
            raise GenpixError(f"{caps.model_name} is text-conditioned; give a prompt, not a class")
        return request, None
    if caps.conditioning == "class":
        if request.class_name not in (None, "") and prompt:
            raise GenpixError("give a class or a prompt (the class name), not both")
        name = request.class_name if request.class_name not in (None, "") else prompt
        label = None if name in (None, "") else class_index(caps, name)
        if negative:
            class_index(caps, negative)  # a class model's negative prompt is a class to guide away from
        return request.but(prompt="", class_name=None if label is None else caps.class_names[label]), label
    if request.class_name not in (None, ""):
        raise GenpixError(f"{caps.model_name} ({caps.family}) is not class-conditional; it takes no class")
    if prompt or negative:
        raise GenpixError(f"{caps.model_name} ({caps.family}) is unconditional: it takes no prompt "
                          f"(send an empty prompt)")
    return request, None


def _bind_images(request: GenerationRequest, caps: Capabilities) -> GenerationRequest:
    """Size (None: the init image's, else the model's), init images or latents, mask and strength."""
    init = request.init
    if request.mask is not None and not caps.inpaint:
        raise GenpixError(f"{caps.model_name} ({caps.family}) cannot inpaint; use a diffusion model")
    if init is not None and not caps.diffusion:
        raise GenpixError(f"{caps.model_name} ({caps.family}) cannot do img2img; use a diffusion model")
    if request.init_images is not None and request.init_latents is not None:
        raise GenpixError("give init images or init latents, not both")
    if request.mask is not None and request.init_images is None:
        raise GenpixError("a mask needs the image to inpaint (init images)")
    width, height = request.width, request.height
    if request.init_images is not None and caps.size_multiple:
        width, height = width or init.shape[-1], height or init.shape[-2]
    width, height = width or caps.native_size[0], height or caps.native_size[1]
    _check_size(caps, width, height)
    request = request.but(width=width, height=height)
    if request.enable_hr:
        request = _bind_hires(request, caps)
    if init is None:
        if caps.inpainting_model:
            raise GenpixError(f"{caps.model_name} is an inpainting model (9 input channels): give it an init "
                              f"image and a mask")
        return request
    for name, tensor, channels in (("init images", request.init_images, caps.channels), ("mask", request.mask, 1)):
        if tensor is not None and (tensor.ndim != 4 or tensor.shape[0] not in (1, request.n) or
                                   tuple(tensor.shape[1:]) != (channels, height, width)):
            raise GenpixError(f"{name} must be (1 or {request.n}, {channels}, {height}, {width}) in [0, 1], "
                              f"got {tuple(tensor.shape)}")
    if caps.inpainting_model and request.mask is None:
        raise GenpixError(f"{caps.model_name} is an inpainting model (9 input channels): give it a mask too")
    strength = request.strength
    if strength is None:
        strength = 1.0 if caps.inpainting_model else 0.75
    if not 0 <= strength <= 1:
        raise GenpixError(f"strength must be between 0 and 1, got {strength}")
    return request.but(strength=float(strength))


def _check_size(caps: Capabilities, width: int, height: int) -> None:
    multiple = caps.size_multiple
    if not multiple and (width, height) != caps.native_size:
        w, h = caps.native_size
        raise GenpixError(f"{caps.model_name} makes {w}x{h} images, not {width}x{height}; "
                          f"give width {w} and height {h}, or leave them out")
    if multiple and (width < multiple or height < multiple or width % multiple or height % multiple):
        raise GenpixError(f"width and height must be positive multiples of {multiple}, got {width}x{height}")


def hires_size(request: GenerationRequest, caps: Capabilities) -> tuple[int, int]:
    """The hires fix's second-pass size (sd-webui): width x height times hr_scale, or hr_resize_x/y
    (one of them 0: the other side keeps the aspect ratio), rounded down to the model's multiple."""
    width, height = request.width, request.height
    x, y = request.hr_resize_x, request.hr_resize_y
    if x == 0 and y == 0:
        x, y = int(width * request.hr_scale), int(height * request.hr_scale)
    elif x == 0:
        x = y * width // height
    elif y == 0:
        y = x * height // width
    multiple = max(1, caps.size_multiple)
    return x // multiple * multiple, y // multiple * multiple


def _bind_hires(request: GenerationRequest, caps: Capabilities) -> GenerationRequest:
    """The hires fix's options: txt2img with a diffusion model of any size, the scale at least 1, the
    second pass's size within MAX_HIRES_PIXELS; its denoising strength (default 0.7, sd-webui's)."""
    if request.init is not None:
        raise GenpixError("the hires fix is for txt2img (leave out the init images)")
    if not 1 <= request.hr_scale <= MAX_HIRES_SCALE or request.hr_resize_x < 0 or request.hr_resize_y < 0:
        raise GenpixError(f"hr_scale must be between 1 and {MAX_HIRES_SCALE:g} and hr_resize_x/y at least 0, "
                          f"got {request.hr_scale:g}, {request.hr_resize_x}, {request.hr_resize_y}")
    if request.hr_second_pass_steps < 0:
        raise GenpixError(f"hr_second_pass_steps must be at least 0, got {request.hr_second_pass_steps}")
    width, height = hires_size(request, caps)
    _check_size(caps, width, height)
    if width * height > MAX_HIRES_PIXELS:
        raise GenpixError(f"the hires fix would make {width}x{height} images; the limit is {MAX_HIRES_PIXELS} "
                          f"pixels per image")
    strength = 0.7 if request.strength is None else request.strength
    if not 0 < strength <= 1:
        raise GenpixError(f"the hires fix's denoising strength must be above 0 and at most 1, got {strength}")
    return request.but(strength=float(strength))


def _bind_sampling(request: GenerationRequest, caps: Capabilities, label: int | None, guidable: bool,
                   ignored: list[str], lenient: bool) -> Plan:
    """Sampler, schedule, steps, CFG scale and the sampler's own options."""
    defaults = caps.defaults
    entry, schedule = samplers.resolve(request.sampler or defaults.sampler, request.schedule)
    steps = defaults.steps if request.steps is None else request.steps
    samplers.check_steps(steps)
    options = {k: getattr(request, k) for k in SAMPLER_OPTIONS if getattr(request, k) is not None}
    if lenient:
        for key in sorted(set(options) - set(entry.options)):
            ignored.append(key)
            del options[key]
    samplers.check_options(entry, options)
    cfg_scale = float(defaults.cfg_scale if request.cfg_scale is None else request.cfg_scale)
    request = request.but(steps=steps, sampler=entry.name, schedule=schedule,
                          cfg_scale=cfg_scale if guidable else None)
    return Plan(request, entry, schedule, options, label, guidable and cfg_scale != 1,
                request.mask is not None and caps.inpainting_model, tuple(ignored))
