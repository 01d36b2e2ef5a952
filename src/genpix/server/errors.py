"""Errors the API answers with: sd-webui's JSON ``{error, detail, body, errors}`` and a 4xx status.

A message never carries an absolute server path (server/paths.py): paths under the folders the
server was given read relative to them, any other path by its last part.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from genpix.errors import GenpixError


class ApiError(GenpixError):
    """A request the server refuses, with the HTTP status to answer (400 unless said otherwise)
    and any headers to send with it (``Retry-After`` on a 503)."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "body": "", "errors": ""}, status_code=status,
                        headers=headers)


def install_error_handlers(app: FastAPI, roots: list = ()) -> None:
    """ApiError -> its status; any other GenpixError (bad input the pipelines found) -> 400.

    Validation errors keep FastAPI's 422 ``{"detail": [...]}``; anything else is a bug and a 500.
    ``roots``: the folders whose paths messages show relative to them (--models-dir, ...).
    """
    from genpix.server.paths import default_roots, redact_paths

    hidden = [*roots, *default_roots()]

    @app.exception_handler(GenpixError)
    async def _genpix_error(request: Request, error: GenpixError) -> JSONResponse:
        status = error.status if isinstance(error, ApiError) else 400
        headers = error.headers if isinstance(error, ApiError) else None
        return error_response(status, type(error).__name__, redact_paths(str(error), hidden), headers)
