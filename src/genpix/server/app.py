"""The ASGI app `genpix serve` runs: the /sdapi/v1 API and the web UI at /, built by :func:`create_app`."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from genpix.pipelines.prompt_blocklist import read_terms
from genpix.server.api import ServerContext, build_router
from genpix.server.auth import parse_credentials
from genpix.server.catalog import ModelCatalog
from genpix.server.errors import error_response, install_error_handlers
from genpix.server.extras import UpscalerRegistry, build_extras_router
from genpix.server.fast_preset import build_fast_router
from genpix.server.guard import Guard, GuardConfig, trusted_hosts_for
from genpix.server.jobs import JobQueue
from genpix.server.limits import Limits
from genpix.server.networks import build_networks_router
from genpix.server.options import Options
from genpix.server.outputs import OutputFolder
from genpix.server.vaes import VaeFolder
from genpix.version import __version__

MAX_BODY_BYTES = 64 * 1024 * 1024  # a few large init images in base64
UI_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


def _ui_file(name: str) -> bytes:
    return (resources.files("genpix.server") / "static" / name).read_bytes()


def create_app(models_dir: str | Path | None = None, outputs_dir: str | Path | None = None,
               api_auth: str | None = None, model: str | None = None, device: str = "cpu",
               blocklist: str | Path | None = None, host: str = "127.0.0.1",
               cors_allow_origins: tuple[str, ...] = (), limits: Limits | None = None,
               upscalers_dir: str | Path | None = "models/ESRGAN", vae_dir: str | Path | None = "models/VAE",
               styles_file: str | Path | None = "styles.csv", cmd_flags: dict | None = None,
               lora_dir: str | Path | None = None, embeddings_dir: str | Path | None = None) -> FastAPI:
    """A new app with its own model catalog, job queue and settings (nothing is shared between apps).

    ``model`` picks the model loaded first (a title, name or hash; default: the first one found);
    ``api_auth`` is 'USER:PASS[,USER:PASS...]' and then guards every route, the UI and the OpenAPI
    schema included; ``blocklist`` a file of extra prompt-blocklist terms for the text-to-image models
    (read now, so a bad file fails before the server listens); ``host`` the address the server is bound
    to (on loopback only loopback Host names are answered); ``cors_allow_origins`` the other origins a
    web page may call from; ``limits`` what one request may cost (server/limits.py); ``vae_dir`` the VAE
    files for SD models (sd_vae, /sd-vae); ``styles_file`` sd-webui's styles.csv (``styles``,
    /prompt-styles); ``cmd_flags`` the command line's other flags, for /cmd-flags.
    """
    if blocklist is not None:
        read_terms(blocklist)
    limits = limits or Limits()
    catalog = ModelCatalog(models_dir, device=device, blocklist=blocklist, upscalers_dir=upscalers_dir,
                           loading={"lora_dir": lora_dir, "embeddings_dir": embeddings_dir})
    vaes = VaeFolder(vae_dir)
    flags = {"models_dir": models_dir, "outputs_dir": outputs_dir, "model": model, "device": device,
             "blocklist": blocklist, "host": host, "cors_allow_origins": list(cors_allow_origins),
             "upscalers_dir": upscalers_dir, "vae_dir": vae_dir, "styles_file": styles_file,
             "api_auth": bool(api_auth), **(cmd_flags or {})}  # api_auth: whether set, never its value
    ctx = ServerContext(catalog, JobQueue(limits.queue_size), Options(catalog, model, vaes.find),
                        OutputFolder(outputs_dir) if outputs_dir else None, limits, vaes,
                        Path(styles_file) if styles_file else None,
                        {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()})
    guard = GuardConfig(trusted_hosts_for(host), tuple(cors_allow_origins),
                        parse_credentials(api_auth) if api_auth else None, MAX_BODY_BYTES)

    catalog.refresh()  # a bad --models-dir fails here, before the server listens
    if model:
        ctx.options.model = catalog.find(model)  # and so does an unknown --model

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        ctx.jobs.shutdown()

    app = FastAPI(title="genpix", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.context = ctx
    install_error_handlers(app, [p for p in (models_dir, outputs_dir) if p] + [Path(__file__).parent.parent])

    @app.middleware("http")
    async def timing(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Process-Time"] = f"{time.perf_counter() - start:.4f}"
        return response

    if cors_allow_origins:  # inside the guard, which has refused every other origin already
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_allow_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials="*" not in cors_allow_origins)
    app.add_middleware(Guard, config=guard)  # host, origin, auth, content type, body size: before any route
    app.include_router(build_router(ctx, []))
    app.include_router(build_extras_router(UpscalerRegistry(upscalers_dir, device=device), ctx.jobs, [], limits))
    app.include_router(build_networks_router(lambda: catalog.pipeline(ctx.options.model), lora_dir, embeddings_dir))
    app.include_router(build_fast_router(lambda title: catalog.pipeline(catalog.find(title) if title
                                                                        else ctx.options.model)))

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(_ui_file("index.html"), media_type="text/html")

    @app.get("/ui/{name}", include_in_schema=False)
    def ui_file(name: str) -> Response:
        if name not in UI_FILES:  # a fixed list: no path from a request reaches the file system
            return error_response(404, "NotFound", f"no UI file {name!r}")
        return Response(_ui_file(name), media_type=UI_FILES[name])

    return app
