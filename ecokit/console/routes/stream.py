"""``WS /stream``: the snapshot, then diffs, stats, command and event frames (ecokit.console.hub)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket

from ecokit.console.hub import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED
from ecokit.console.routes.auth import authenticated, console_of

router = APIRouter()


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    if not authenticated(websocket):
        # Accept, then close with a code the page can read (a refused upgrade tells it nothing).
        await websocket.accept()
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="the console token is needed")
        return
    origin = websocket.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != websocket.headers.get("host"):
        # A page of another site opening the stream with this browser's cookie (cross-site
        # WebSocket hijacking): browsers always send Origin, so refuse a foreign one.
        await websocket.accept()
        await websocket.close(code=CLOSE_FORBIDDEN, reason="cross-origin stream refused")
        return
    await websocket.accept()
    await console_of(websocket).hub.serve(websocket)
