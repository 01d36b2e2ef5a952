"""The extra-network routes of sd-webui's API: LoRA files and textual-inversion embeddings.

- ``GET /sdapi/v1/loras`` -> ``[{name, alias, path, metadata}]`` (extensions-builtin/Lora/scripts/
  lora_script.py ``create_lora_json``; metadata values that hold JSON objects parsed, as sd-webui's
  ``read_metadata_from_safetensors``); ``POST /sdapi/v1/refresh-loras`` re-reads the folder (null);
- ``GET /sdapi/v1/embeddings`` -> ``{"loaded": {name: {step, sd_checkpoint, sd_checkpoint_name,
  shape, vectors}}, "skipped": {...}}`` for the current model's text encoder(s) (modules/api/api.py
  ``get_embeddings``); ``POST /sdapi/v1/refresh-embeddings`` (null).

The folders are sd-webui's defaults (``models/Lora``, ``embeddings``) unless given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from genpix.errors import GenpixError
from genpix.io.embeddings import DEFAULT_EMBEDDINGS_DIR, Embedding, EmbeddingFolder
from genpix.io.lora_files import list_network_files, read_metadata
from genpix.pipelines.extra_networks import DEFAULT_LORA_DIR


def _metadata(path: Path) -> dict[str, Any]:
    try:
        raw = read_metadata(path)
    except GenpixError:
        return {}
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            parsed[key] = json.loads(value) if value[:1] == "{" else value
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def list_loras(folder: str | Path) -> list[dict[str, Any]]:
    """sd-webui's ``/loras`` items for every LoRA file in ``folder``."""
    items = []
    for name, path in list_network_files(folder).items():
        metadata = _metadata(path)
        alias = metadata.get("ss_output_name") if isinstance(metadata.get("ss_output_name"), str) else None
        items.append({"name": name, "alias": alias or name, "path": str(path), "metadata": metadata})
    return items


def _embedding_item(embedding: Embedding | str) -> dict[str, Any]:
    if not isinstance(embedding, Embedding):  # unreadable: listed with nothing known about it
        return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
    return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
            "sd_checkpoint_name": embedding.sd_checkpoint_name, "shape": embedding.shape,
            "vectors": embedding.vectors}


def list_embeddings(folder: EmbeddingFolder, widths: dict[str, int] | None) -> dict[str, dict[str, Any]]:
    """sd-webui's ``/embeddings`` answer; ``widths`` (text encoder part -> token width) of the current
    model, None when it has no CLIP text encoder (then every embedding is skipped)."""
    if widths is None:
        loaded, skipped = {}, folder.all()
    else:
        loaded, skipped = folder.for_model(widths)
    return {"loaded": {n: _embedding_item(e) for n, e in loaded.items()},
            "skipped": {n: _embedding_item(e) for n, e in skipped.items()}}


def text_encoder_widths(pipe: Any) -> dict[str, int] | None:
    """Part -> width of a pipeline's CLIP text encoders: {"": D} for SD 1.x/2.x, {"clip_l": 768,
    "clip_g": 1280} with a second encoder (SDXL); None without one."""
    modules = dict(getattr(getattr(pipe, "parts", None), "modules", ()) or ())
    widths = {name: m.config.hidden_size for name, m in modules.items()
              if name.startswith("text_encoder") and hasattr(getattr(m, "config", None), "hidden_size")}
    if not widths:
        return None
    if "text_encoder_2" in widths:
        return {"clip_l": widths["text_encoder"], "clip_g": widths["text_encoder_2"]}
    return {"": widths["text_encoder"]}


def build_networks_router(current_pipeline: Callable[[], Any], lora_dir: str | Path | None = None,
                          embeddings_dir: str | Path | None = None, dependencies: list | None = None) -> APIRouter:
    """The four routes; ``current_pipeline()`` loads (or returns) the current model's pipeline."""
    router = APIRouter(prefix="/sdapi/v1", dependencies=dependencies or [])
    loras = Path(lora_dir or DEFAULT_LORA_DIR)
    embeddings = EmbeddingFolder(embeddings_dir or DEFAULT_EMBEDDINGS_DIR)

    @router.get("/loras")
    async def get_loras() -> list[dict[str, Any]]:
        return await run_in_threadpool(list_loras, loras)

    @router.post("/refresh-loras")
    async def refresh_loras() -> None:
        await run_in_threadpool(list_loras, loras)  # the folder is read afresh on every request

    @router.get("/embeddings")
    async def get_embeddings() -> dict[str, dict[str, Any]]:
        def answer():
            return list_embeddings(embeddings, text_encoder_widths(current_pipeline()))
        return await run_in_threadpool(answer)

    @router.post("/refresh-embeddings")
    async def refresh_embeddings() -> None:
        await run_in_threadpool(embeddings.all)

    return router
