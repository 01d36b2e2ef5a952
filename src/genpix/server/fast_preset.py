"""genpix's fast preset for the web UI (``genpix generate --fast``, pipelines/fast.py), in sd-webui's
txt2img shape.

``GET /genpix/fast-preset?model=TITLE&prompt=TEXT`` (model: a title, name or hash, default the current
one; the prompt's <lora:> tags can pick a few-step preset) -> ``{steps, sampler_name, scheduler,
cfg_scale (only where the preset sets it), override_settings: {deepcache_interval, deepcache_block,
token_merging_ratio, tiny_decode}}``. The override settings hold every less-work setting, off where the
preset leaves it off, so a request sent with them does not depend on the server's /options. A model
without a sampler (VAE, GAN) has no preset: a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from genpix.diffusion import schedules
from genpix.pipelines.fast import fast_preset
from genpix.server.errors import ApiError
from genpix.server.settings import LESS_WORK_SETTINGS, RequestSettings


def fast_request_fields(pipe, prompt: str = "") -> dict[str, Any]:
    """The fast preset of a loaded pipeline as sd-webui txt2img fields (see the module's docstring)."""
    caps = pipe.capabilities
    if not caps.diffusion:
        raise ApiError(f"{caps.model_name} ({caps.family}) generates in one pass: it has no fast preset")
    preset = fast_preset(pipe, prompt)
    off = RequestSettings()
    fields = {"steps": preset["steps"], "sampler_name": preset["sampler"],
              "scheduler": schedules.schedule_key(preset.get("schedule", "automatic")),
              "override_settings": {name: preset.get(name, getattr(off, name)) for name in LESS_WORK_SETTINGS}}
    if "cfg_scale" in preset:
        fields["cfg_scale"] = preset["cfg_scale"]
    return fields


def build_fast_router(pipeline_for: Callable[[str | None], Any], dependencies: list | None = None) -> APIRouter:
    """The route; ``pipeline_for(model)`` loads (or returns) the pipeline of a model title, None: the current."""
    router = APIRouter(prefix="/genpix", dependencies=dependencies or [])

    @router.get("/fast-preset")
    async def get_fast_preset(model: str | None = None, prompt: str = "") -> dict[str, Any]:
        return await run_in_threadpool(lambda: fast_request_fields(pipeline_for(model or None), prompt))

    return router
