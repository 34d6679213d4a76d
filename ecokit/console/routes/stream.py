"""``WS /stream``: the snapshot, then diffs, stats, command and event frames (ecokit.console.hub)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ecokit.console.hub import CLOSE_UNAUTHORIZED
from ecokit.console.routes.auth import authenticated, console_of

router = APIRouter()


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    if not authenticated(websocket):
        # Accept, then close with a code the page can read (a refused upgrade tells it nothing).
        await websocket.accept()
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="the console token is needed")
        return
    await websocket.accept()
    await console_of(websocket).hub.serve(websocket)
