"""The local web app: sd-webui's /sdapi/v1 HTTP API and a web UI, over genpix pipelines."""

from genpix.server.app import create_app

__all__ = ["create_app"]
