"""What the page needs from ecokit.yaml (behind the token), and the open probes: /healthz,
/readyz and /metrics reveal no fleet data."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import PlainTextResponse, Response

from ecokit.console.errors import json_response
from ecokit.console.routes.auth import console_of
from ecokit.console.schemas import ErrorResponse, PageConfig

router = APIRouter(prefix="/api", tags=["page"], responses={401: {"model": ErrorResponse}})
public = APIRouter(tags=["probes"])


@router.get("/config", response_model=PageConfig, summary="What the page needs from ecokit.yaml")
def page_config(request: Request) -> Response:
    service = console_of(request)
    s = service.settings
    return json_response({
        "stack": service.config.stack, "version": request.app.version,
        "tiles": {"url": s.tiles.url, "attribution": s.tiles.attribution, "max_zoom": s.tiles.max_zoom},
        "batch_interval_ms": s.batch_interval_ms, "stats_interval_ms": s.stats_interval_ms,
        "history": {"default_since": s.history.default_since, "max_points": s.history.max_points,
                    "max_points_limit": s.history.max_points_limit},
        "commands": {"timeout_s": s.commands.timeout_s, "expires_s": s.commands.expires_s},
    })


@public.get("/healthz", summary="200 while the MQTT intake and the command engine run; 503 names the one "
                                "that stopped", response_class=PlainTextResponse)
def healthz(request: Request) -> Response:
    ok, reason = console_of(request).health()
    return PlainTextResponse(("ok" if ok else reason) + "\n", status_code=200 if ok else 503)


@public.get("/readyz", summary="200 once connected and subscribed", response_class=PlainTextResponse)
def readyz(request: Request) -> Response:
    ready = console_of(request).ready()
    return PlainTextResponse("ready\n" if ready else "not ready\n", status_code=200 if ready else 503)


@public.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> Response:
    return Response(generate_latest(console_of(request).registry), media_type=CONTENT_TYPE_LATEST)
