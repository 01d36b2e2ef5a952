"""--api-auth USER:PASS[,USER:PASS...]: HTTP Basic on every route, passwords compared in constant time."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

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


def basic_auth(credentials: dict[str, str]) -> Callable:
    """A FastAPI dependency: 401 {"detail": "Incorrect username or password"} unless a pair matches."""
    security = HTTPBasic(auto_error=False)

    def check(given: HTTPBasicCredentials | None = Depends(security)) -> None:
        matched = False
        if given is not None:
            for user, password in credentials.items():  # every pair, so timing tells nothing
                same_user = secrets.compare_digest(given.username.encode(), user.encode())
                same_password = secrets.compare_digest(given.password.encode(), password.encode())
                matched |= same_user & same_password
        if not matched:
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check
