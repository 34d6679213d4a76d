"""The API's one error shape: ``{"error": {"code", "message", "field"}}`` with a 4xx/5xx status."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.responses import Response


class ApiError(Exception):
    """Raised by a route; becomes the JSON error response."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def bad_request(field: str | None, message: str) -> ApiError:
    return ApiError(400, "bad_request", f"{field}: {message}" if field else message, field)


def not_found(what: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", what, field)


def json_response(doc: object, status: int = 200) -> Response:
    """A JSON response serialised once, as is (the routes' response models only document it)."""
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str, field: str | None) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message, "field": field}})
    headers = {"WWW-Authenticate": 'Bearer realm="ecokit console"'} if status == 401 else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def field_of(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as the caller wrote it: ``limit``, ``args.seconds``, ``vehicles[2]``."""
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "body", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None
