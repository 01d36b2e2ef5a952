"""--api-auth USER:PASS[,USER:PASS...]: HTTP Basic on every route, passwords compared in constant time.

Credentials are UTF-8 (RFC 7617's charset), so a non-ASCII name or password given at start can log in.
The check itself runs in server/guard.py, before routing, so no route (the OpenAPI schema, the UI,
a route added later) can be reached without it.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from genpix.errors import GenpixError


def parse_credentials(spec: str) -> dict[str, str]:
    """'user:pass,u2:p2' -> {user: pass, ...}; a pair without both parts is a one-line error."""
    credentials = {}
    for pair in spec.split(","):
        user, sep, password = pair.strip().partition(":")
        if not sep or not user or not password:
            raise GenpixError(f"--api-auth: expected USER:PASS[,USER:PASS...], got {pair.strip()!r}")
        credentials[user] = password
    return credentials


def credentials_match(header: str | None, credentials: dict[str, str]) -> bool:
    """Whether an ``Authorization: Basic ...`` header names one of the pairs (UTF-8 user:pass)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    matched = False
    for known_user, known_password in credentials.items():  # every pair, so timing tells nothing
        same_user = secrets.compare_digest(user.encode(), known_user.encode())
        same_password = secrets.compare_digest(password.encode(), known_password.encode())
        matched |= same_user & same_password & bool(sep)
    return matched
