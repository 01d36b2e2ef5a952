"""Errors the API answers with: sd-webui's JSON ``{error, detail, body, errors}`` and a 4xx status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from genpix.errors import GenpixError


class ApiError(GenpixError):
    """A request the server refuses, with the HTTP status to answer (400 unless said otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "body": "", "errors": ""}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """ApiError -> its status; any other GenpixError (bad input the pipelines found) -> 400.

    Validation errors keep FastAPI's 422 ``{"detail": [...]}``; anything else is a bug and a 500.
    """

    @app.exception_handler(GenpixError)
    async def _genpix_error(request: Request, error: GenpixError) -> JSONResponse:
        status = error.status if isinstance(error, ApiError) else 400
        return error_response(status, type(error).__name__, str(error))
