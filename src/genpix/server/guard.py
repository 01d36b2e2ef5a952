"""The checks every request passes before it reaches a route, as one ASGI middleware, in order:

1. Host: a server bound to loopback answers only loopback Host names (localhost, 127.0.0.1, ::1),
   so a web page cannot reach it through a DNS-rebinding name.
2. Origin: a cross-origin request (an ``Origin`` other than the server's own) is refused unless
   ``--cors-allow-origins`` names that origin (sd-webui's flag; CORS headers are then sent).
3. Auth: with ``--api-auth`` every route needs HTTP Basic credentials (UTF-8, RFC 7617), the
   OpenAPI schema and the UI included.
4. Content type: a POST with a body must say ``application/json`` (no "simple" cross-site form or
   text/plain request gets through), unless it carries valid credentials.
5. Body: at most ``max_body`` bytes, counted as they arrive (a chunked body too), then handed on;
   JSON with NaN or Infinity, which is not JSON (RFC 8259), is a 400.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

from genpix.server.auth import credentials_match
from genpix.server.errors import error_response

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class GuardConfig:
    trusted_hosts: tuple[str, ...] | None  # Host names served (lower case); None: any
    allowed_origins: tuple[str, ...] = ()  # --cors-allow-origins; "*" allows every origin
    credentials: dict[str, str] | None = None  # --api-auth pairs; None: no auth
    max_body: int = 64 * 1024 * 1024


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on this machine only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def trusted_hosts_for(bind: str) -> tuple[str, ...] | None:
    """The Host names a server bound to ``bind`` answers: loopback names for a loopback bind, else any."""
    return LOOPBACK_NAMES if is_loopback(bind) else None


def host_name(value: str) -> str:
    """'example.org:7860' -> 'example.org', '[::1]:7860' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class Guard:
    """ASGI middleware: the checks of this module's docstring, then ``app``."""

    def __init__(self, app: Callable, config: GuardConfig) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope["method"] in UNSAFE_METHODS or "content-length" in headers or "transfer-encoding" in headers:
            body = await self._read_body(receive)
            if not isinstance(body, bytes):
                return await body(scope, receive, send) if body is not None else None
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _refusal(self, scope, headers: dict[str, str]):
        """The error response for a request refused on its headers alone, or None."""
        cfg = self.config
        host = headers.get("host", "")
        if cfg.trusted_hosts is not None and host_name(host) not in cfg.trusted_hosts:
            return error_response(400, "UntrustedHost", "this server answers only Host names of this machine "
                                                        "(localhost, 127.0.0.1, [::1])")
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, host):
            return error_response(403, "CrossOriginRefused",
                                  f"cross-origin request from {origin[:100]!r} refused; start the server with "
                                  f"--cors-allow-origins to allow that origin")
        authorised = cfg.credentials is not None and credentials_match(headers.get("authorization"),
                                                                       cfg.credentials)
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if cfg.credentials is not None and not authorised and not preflight:
            return JSONResponse({"detail": "Incorrect username or password"}, 401,  # as FastAPI's HTTPBasic
                                headers={"WWW-Authenticate": "Basic"})
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_body):
            return error_response(413, "PayloadTooLarge", f"request body over {cfg.max_body} bytes")
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if scope["method"] in UNSAFE_METHODS and has_body and media != "application/json" and not authorised:
            return error_response(415, "UnsupportedMediaType",
                                  f"send the body as application/json, not {media or 'no content type'!r}")
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if "*" in self.config.allowed_origins or origin in self.config.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()

    async def _read_body(self, receive):
        """The whole body as bytes, or the error response to answer instead (None: the client left)."""
        limit = self.config.max_body  # a Content-Length over it was refused in _refusal
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # counted as it streams: a chunked body has no Content-Length
                return error_response(413, "PayloadTooLarge", f"request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"NaN" in body or b"Infinity" in body:
            try:
                json.loads(body, parse_constant=_no_constants)
            except _NonFinite as error:
                return error_response(400, "NonFiniteNumber", f"{error} is not a JSON number; send a finite number")
            except (ValueError, RecursionError):
                pass  # not JSON at all: the route's own parsing answers with its 422
        return body


class _NonFinite(ValueError):
    pass


def _no_constants(name: str):
    raise _NonFinite(name)


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then waits on the real one."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
