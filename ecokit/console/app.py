"""The console's FastAPI app: auth, JSON errors that name the field, security headers, access
logs without query strings, the page, Swagger UI from the package, and the routers.

New features plug in as one more router (``routes/``), as geofences did:
``app.include_router(geofences.router, dependencies=[Depends(require_auth)])``.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecokit.console.errors import ApiError, error_response, field_of
from ecokit.console.routes import commands, fleet, geofences, meta, shadows, stream
from ecokit.console.routes.auth import require_auth
from ecokit.console.service import COOKIE, ConsoleService

HERE = Path(__file__).parent
STATIC = HERE / "static"
APIDOCS = HERE / "apidocs"
MAX_BODY = 64 * 1024
# ES modules need a JavaScript type; say the standard one whatever the system's mime.types says.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")

TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ecokit console: token needed</title></head>
<body><h1>ecokit console</h1>
<p>{message}</p>
<p>Open the URL that <code>ecokit up</code>, <code>ecokit status</code> or <code>ecokit open</code> prints:
<code>http://HOST:PORT/?token=…</code></p></body></html>
"""


def _version() -> str:
    try:
        return metadata.version("ecokit")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def security_headers(tile_origin: str, *, docs: bool = False) -> list[tuple[bytes, bytes]]:
    style = "style-src 'self' 'unsafe-inline'" if docs else "style-src 'self'"
    images = f"img-src 'self' data: {tile_origin}".strip()
    csp = (f"default-src 'self'; {images}; connect-src 'self'; {style}; "
           "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    return [(b"content-security-policy", csp.encode()), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


class ConsoleMiddleware:
    """Bounded request bodies (413), security headers on every response, and one access log
    line per request with the path only (never the query string, so never a token)."""

    def __init__(self, app: ASGIApp, *, tile_origin: str, log: logging.Logger, requests: Counter) -> None:
        self.app = app
        self.headers = security_headers(tile_origin)
        self.docs_headers = security_headers(tile_origin, docs=True)
        self.log = log
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        extra = self.docs_headers if path == "/docs" else self.headers
        if path.startswith("/api/"):
            extra = [*extra, (b"cache-control", b"no-store")]  # fleet data: never kept by a cache
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            body_receive = await self._bounded_body(scope, receive, send_with_headers)
            if body_receive is not None:
                await self.app(scope, body_receive, send_with_headers)
        finally:
            # The route's template (/api/vehicles/{vehicle_id}), never the raw path: bounded labels.
            route = getattr(scope.get("route"), "path", None) or ("static" if path.startswith(("/static/",
                                                                    "/apidocs/")) else "unmatched")
            self.requests.labels(scope["method"], route, str(status)).inc()
            level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
            if self.log.isEnabledFor(level):
                self.log.log(level, f"{scope['method']} {path} {status}",
                             extra={"method": scope["method"], "path": path, "status": status,
                                    "ms": round((time.perf_counter() - started) * 1000, 2)})

    async def _bounded_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """A receive that replays the body read here (at most MAX_BODY), or None after a 413."""
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_large = int(length) > MAX_BODY
            except ValueError:
                too_large = True
            if too_large:
                await error_response(413, "too_large", f"the body is over {MAX_BODY // 1024} KiB", None)(
                    scope, receive, send)
                return None
            if scope["method"] in ("GET", "HEAD"):
                return receive
        elif b"transfer-encoding" not in headers:
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await error_response(413, "too_large", f"the body is over {MAX_BODY // 1024} KiB", None)(
                    scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def _validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    field = field_of(loc)
    msg = str(first.get("msg", "invalid"))
    if loc == ("body",):
        if first.get("type") == "missing":
            return "a JSON body is required", None
        return "the body must be a JSON object (Content-Type: application/json)", None
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    return (f"{field}: {msg}" if field else msg), field


def create_app(service: ConsoleService) -> FastAPI:
    app = FastAPI(
        title="ecokit fleet console", version=_version(), lifespan=service.lifespan,
        description="Live fleet state, history, commands and shadows of an ecokit stack (docs/console.md). "
                    "Authenticate with `Authorization: Bearer <token>` (the token `ecokit open --token` prints) or "
                    "the cookie the page gets from `/?token=`.",
        docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.console = service
    requests = Counter("ecokit_console_http_requests", "HTTP requests by route and status",
                       ["method", "route", "status"], registry=service.registry)
    app.add_middleware(ConsoleMiddleware, tile_origin=service.settings.tiles.origin, log=service.log,
                       requests=requests)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        message, field = _validation_message(exc.errors())
        return error_response(400, "bad_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, codes.get(exc.status_code, "error"), message, None)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        service.log.error("request failed", exc_info=exc, extra={"path": request.url.path})
        return error_response(500, "internal", f"the console failed: {type(exc).__name__}", None)

    auth = [Depends(require_auth)]
    app.include_router(fleet.router, dependencies=auth)
    app.include_router(commands.router, dependencies=auth)
    app.include_router(shadows.router, dependencies=auth)
    app.include_router(geofences.router, dependencies=auth)
    app.include_router(meta.router, dependencies=auth)
    app.include_router(meta.public)
    app.include_router(stream.router)

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:
            if not service.token_ok(token):
                return HTMLResponse(TOKEN_PAGE.format(message="That token is not this console's."), status_code=401)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, service.cookie_value, httponly=True, samesite="strict", path="/")
            return response
        if not service.cookie_ok(request.cookies.get(COOKIE)):
            return HTMLResponse(TOKEN_PAGE.format(message="This console needs its token."), status_code=401)
        index = STATIC / "index.html"
        if not index.is_file():
            return HTMLResponse(TOKEN_PAGE.format(message="The page is not installed; the API works."))
        return FileResponse(index, headers={"Cache-Control": "no-store"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return FileResponse(APIDOCS / "index.html", media_type="text/html")

    app.mount("/apidocs", StaticFiles(directory=APIDOCS), name="apidocs")
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
