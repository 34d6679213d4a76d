"""Who may call the API: ``Authorization: Bearer <token>`` (scripts, curl) or the cookie the
page gets from ``/?token=`` (docs/console.md, Auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from ecokit.console.errors import ApiError
from ecokit.console.service import COOKIE, ConsoleService


def console_of(conn: HTTPConnection) -> ConsoleService:
    service: ConsoleService = conn.app.state.console
    return service


def authenticated(conn: HTTPConnection) -> bool:
    service = console_of(conn)
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and service.token_ok(value.strip()):
        return True
    return service.cookie_ok(conn.cookies.get(COOKIE))


# Documents the scheme in OpenAPI ("Authorize" at /docs); the check itself is ``authenticated``.
bearer = HTTPBearer(auto_error=False, description="the console token (`ecokit open --token`)")


def require_auth(request: Request,
                 _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None) -> None:
    if not authenticated(request):
        raise ApiError(401, "unauthorized", "this API needs the console token: `Authorization: Bearer <token>` "
                       "(`ecokit open --token` prints it) or the page's cookie")
