"""The ASGI app `genpix serve` runs: the /sdapi/v1 API and the web UI at /, built by :func:`create_app`."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from genpix.pipelines.prompt_blocklist import read_terms
from genpix.server.api import ServerContext, build_router
from genpix.server.auth import basic_auth, parse_credentials
from genpix.server.catalog import ModelCatalog
from genpix.server.errors import error_response, install_error_handlers
from genpix.server.extras import UpscalerRegistry, build_extras_router
from genpix.server.jobs import JobQueue
from genpix.server.options import Options
from genpix.server.outputs import OutputFolder
from genpix.version import __version__

MAX_BODY_BYTES = 64 * 1024 * 1024  # a few large init images in base64
UI_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


def _ui_file(name: str) -> bytes:
    return (resources.files("genpix.server") / "static" / name).read_bytes()


def create_app(models_dir: str | Path | None = None, outputs_dir: str | Path | None = None,
               api_auth: str | None = None, model: str | None = None, device: str = "cpu",
               blocklist: str | Path | None = None, upscalers_dir: str | Path | None = "models/ESRGAN") -> FastAPI:
    """A new app with its own model catalog, job queue and settings (nothing is shared between apps).

    ``model`` picks the model loaded first (a title, name or hash; default: the first one found);
    ``api_auth`` is 'USER:PASS[,USER:PASS...]' and then guards every route, the UI included;
    ``blocklist`` a file of extra prompt-blocklist terms for the text-to-image models (read now, so a bad
    file fails before the server listens).
    """
    if blocklist is not None:
        read_terms(blocklist)
    catalog = ModelCatalog(models_dir, device=device, blocklist=blocklist)
    ctx = ServerContext(catalog, JobQueue(), Options(catalog, model),
                        OutputFolder(outputs_dir) if outputs_dir else None)
    dependencies = [Depends(basic_auth(parse_credentials(api_auth)))] if api_auth else []

    catalog.refresh()  # a bad --models-dir fails here, before the server listens
    if model:
        ctx.options.model = catalog.find(model)  # and so does an unknown --model

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        ctx.jobs.shutdown()

    app = FastAPI(title="genpix", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.context = ctx
    install_error_handlers(app)

    @app.middleware("http")
    async def limits_and_timing(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return error_response(413, "PayloadTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Process-Time"] = f"{time.perf_counter() - start:.4f}"
        return response

    app.include_router(build_router(ctx, dependencies))
    app.include_router(build_extras_router(UpscalerRegistry(upscalers_dir, device=device), ctx.jobs, dependencies))

    @app.get("/", include_in_schema=False, dependencies=dependencies)
    def index() -> Response:
        return Response(_ui_file("index.html"), media_type="text/html")

    @app.get("/ui/{name}", include_in_schema=False, dependencies=dependencies)
    def ui_file(name: str) -> Response:
        if name not in UI_FILES:  # a fixed list: no path from a request reaches the file system
            return error_response(404, "NotFound", f"no UI file {name!r}")
        return Response(_ui_file(name), media_type=UI_FILES[name])

    return app
