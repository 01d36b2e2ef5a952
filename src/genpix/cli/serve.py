"""``genpix serve``: the web UI and sd-webui's /sdapi/v1 API on one local port.

SIGINT/SIGTERM stop the server gracefully: no new jobs are taken, waiting ones are cancelled and
the running one is interrupted at its next step, each client answered with a 503 that says so; the
process then exits (after at most ``GRACE_S`` seconds of waiting for open requests).
"""

from __future__ import annotations

import argparse
import warnings

from genpix.cli.common import add_device, non_negative_int, positive_int

GRACE_S = 10  # seconds open requests may take to finish after SIGINT/SIGTERM


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def register(commands) -> None:
    from genpix.server.limits import Limits

    p = commands.add_parser(
        "serve", help="run the web UI and the sd-webui-compatible HTTP API",
        description="Serve the web UI at / and sd-webui's /sdapi/v1 API (txt2img, img2img, progress, "
                    "options, ...) with the bundled models and those under --models-dir.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    p.add_argument("--models-dir", help="folder of model folders and checkpoints to offer besides the bundled ones")
    p.add_argument("--upscalers-dir", default="models/ESRGAN",
                   help="folder of upscaler files (.pth, .safetensors) for Extras (default models/ESRGAN)")
    p.add_argument("--vae-dir", default="models/VAE",
                   help="folder of VAE files for SD models, chosen with the sd_vae setting (default models/VAE)")
    p.add_argument("--styles-file", default="styles.csv",
                   help="sd-webui's styles.csv: the prompt styles requests name (default styles.csv)")
    p.add_argument("--outputs-dir", help="save every generated image here as PNG with its parameters")
    p.add_argument("--api-auth", metavar="USER:PASS[,...]", help="require HTTP Basic auth on every route")
    p.add_argument("--cors-allow-origins", metavar="ORIGIN[,...]", default="",
                   help="other origins (e.g. http://localhost:3000) whose web pages may call the API; "
                        "cross-origin requests from any other are refused")
    p.add_argument("--model", help="model to start with: a title, name or hash (default: the first found)")
    p.add_argument("--lora-dir", help="LoRA files for <lora:NAME:WEIGHT> in prompts (default models/Lora, as sd-webui)")
    p.add_argument("--embeddings-dir", help="textual-inversion embeddings, used by file stem (default embeddings)")
    p.add_argument("--blocklist", metavar="FILE",
                   help="extra prompt-blocklist terms (one a line) for the text-to-image models' safety check")
    limits = Limits()
    for flag, field, what in (("--max-prompt-length", "max_prompt_length", "characters of a prompt"),
                              ("--max-images", "max_images", "images per request (batch_size x n_iter)"),
                              ("--max-pixels", "max_pixels", "pixels per request (width x height x images, "
                                                             "and the sent pictures together)"),
                              ("--max-steps", "max_steps", "sampling steps per request"),
                              ("--queue-size", "queue_size", "jobs waiting before a 503"),
                              ("--max-merged-images", "max_merged_images",
                               "images of queued txt2img requests run as one batch (1: no merging)")):
        default = getattr(limits, field)
        p.add_argument(flag, type=positive_int, default=default, help=f"most {what} (default {default})")
    p.add_argument("--merge-wait-ms", type=non_negative_int, default=limits.merge_wait_ms,
                   help="milliseconds a merged batch waits for as many requests as its last batch had; a lone "
                        f"client never waits (0: no wait; default {limits.merge_wait_ms})")
    add_device(p)
    p.set_defaults(run=run_serve)


def exposure_warning(host: str, api_auth: str | None) -> str | None:
    """The warning for a server that listens beyond this machine without --api-auth, else None."""
    from genpix.server.guard import is_loopback

    if is_loopback(host) or api_auth:
        return None
    return (f"listening on {host} without --api-auth: anyone who can reach this address can use the "
            f"server; pass --api-auth USER:PASS")


def _flags(args: argparse.Namespace) -> dict:
    """The flags /cmd-flags shows (api_auth only as whether it is set)."""
    return {k: v for k, v in vars(args).items() if k not in ("run", "api_auth", "command") and not callable(v)}


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from genpix.device import resolve_device, set_cpu_threads
    from genpix.server import create_app
    from genpix.server.limits import Limits

    set_cpu_threads()
    limits = Limits(args.max_prompt_length, args.max_images, args.max_pixels, args.max_steps, args.max_pixels,
                    args.queue_size, args.max_merged_images, args.merge_wait_ms)
    origins = tuple(o.strip().rstrip("/") for o in args.cors_allow_origins.split(",") if o.strip())
    app = create_app(models_dir=args.models_dir, outputs_dir=args.outputs_dir, api_auth=args.api_auth,
                     model=args.model, device=str(resolve_device(args.device)), blocklist=args.blocklist,
                     host=args.host, cors_allow_origins=origins, limits=limits,
                     upscalers_dir=args.upscalers_dir, vae_dir=args.vae_dir, styles_file=args.styles_file,
                     cmd_flags=_flags(args), lora_dir=args.lora_dir, embeddings_dir=args.embeddings_dir)
    message = exposure_warning(args.host, args.api_auth)
    if message:
        warnings.warn(message, stacklevel=1)
    print(f"genpix: serving on http://{args.host}:{args.port}/ (API at /sdapi/v1)", flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            timeout_graceful_shutdown=GRACE_S)
    graceful_server(config, app.state.context.jobs.close).run()
    return 0


def graceful_server(config, close):
    """uvicorn's server whose SIGINT/SIGTERM first calls ``close`` (the job queue's, server/jobs.py), so
    the running job ends at its next step and uvicorn's wait for open requests is short."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            close()
            super().handle_exit(sig, frame)

    return GracefulServer(config)
