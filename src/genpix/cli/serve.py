"""``genpix serve``: the web UI and sd-webui's /sdapi/v1 API on one local port."""

from __future__ import annotations

import argparse

from genpix.cli.common import add_device


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def register(commands) -> None:
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
    p.add_argument("--outputs-dir", help="save every generated image here as PNG with its parameters")
    p.add_argument("--api-auth", metavar="USER:PASS[,...]", help="require HTTP Basic auth on every route")
    p.add_argument("--model", help="model to start with: a title, name or hash (default: the first found)")
    p.add_argument("--blocklist", metavar="FILE",
                   help="extra prompt-blocklist terms (one a line) for the text-to-image models' safety check")
    add_device(p)
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from genpix.device import resolve_device, set_cpu_threads
    from genpix.server import create_app

    set_cpu_threads()
    app = create_app(models_dir=args.models_dir, outputs_dir=args.outputs_dir, api_auth=args.api_auth,
                     model=args.model, device=str(resolve_device(args.device)), blocklist=args.blocklist,
                     upscalers_dir=args.upscalers_dir)
    print(f"genpix: serving on http://{args.host}:{args.port}/ (API at /sdapi/v1)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
