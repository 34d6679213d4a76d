"""The WebSocket stream: a snapshot on connect, then coalesced diffs, stats, command and
event frames (docs/console.md, WebSocket /stream).

Every ``batch_interval`` the hub takes the vehicles changed since the last batch from the
store, serialises one diff frame and offers it to every client's ``ClientFeed``. A feed
(pure, no I/O) holds what its client has not been sent yet, bounded: while the client keeps
up it sends the shared frames as they are; once it falls ``MAX_FRAMES`` behind, the pending
diffs collapse into a set of vehicle ids, and the next frame it gets is built from the
latest state of exactly those vehicles. Commands keep their latest state per id; events are
kept up to ``MAX_EVENTS``. Nothing here ever blocks the MQTT intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ecokit.console.state import FleetStore

MAX_FRAMES = 2  # shared diff frames a client may have waiting before they are coalesced
MAX_EVENTS = 1000
SEND_TIMEOUT = 30.0  # a client that takes nothing for this long is closed (4408)
PING_INTERVAL = 20.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4408


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


@dataclass(frozen=True)
class Coalesced:
    """Build a diff from the current state of ``ids``; ``removed`` were forgotten meanwhile."""

    ids: frozenset[str]
    removed: frozenset[str]


class ClientFeed:
    """What one client has not been sent yet, bounded whatever the client does."""

    def __init__(self) -> None:
        self.frames: deque[tuple[bytes, tuple[str, ...], tuple[str, ...]]] = deque()
        self.ids: set[str] = set()
        self.removed: set[str] = set()
        self.commands: OrderedDict[str, bytes] = OrderedDict()
        self.events: deque[bytes] = deque(maxlen=MAX_EVENTS)
        self.stats: bytes | None = None
        self.ping: bytes | None = None
        self.coalesced = 0  # diffs merged instead of sent as they were
        self.events_dropped = 0

    @property
    def coalescing(self) -> bool:
        return bool(self.ids or self.removed)

    def offer_diff(self, frame: bytes, ids: Iterable[str], removed: Iterable[str]) -> None:
        ids, removed = tuple(ids), tuple(removed)
        if not self.coalescing and len(self.frames) < MAX_FRAMES:
            self.frames.append((frame, ids, removed))
            return
        for _, fids, fremoved in self.frames:
            self.ids.update(fids)
            self.removed.update(fremoved)
        self.coalesced += len(self.frames) + 1
        self.frames.clear()
        self.ids.update(ids)
        self.removed.update(removed)

    def offer_command(self, command_id: str, frame: bytes) -> None:
        self.commands[command_id] = frame
        self.commands.move_to_end(command_id)

    def offer_event(self, frame: bytes) -> None:
        if len(self.events) == self.events.maxlen:
            self.events_dropped += 1
        self.events.append(frame)

    def offer_stats(self, frame: bytes) -> None:
        self.stats = frame

    def offer_ping(self, frame: bytes) -> None:
        self.ping = frame

    def next(self) -> bytes | Coalesced | None:
        """The next thing to send: vehicle diffs first, then commands, events, stats, ping."""
        if self.frames:
            return self.frames.popleft()[0]
        if self.coalescing:
            out = Coalesced(frozenset(self.ids), frozenset(self.removed))
            self.ids, self.removed = set(), set()
            return out
        if self.commands:
            return self.commands.popitem(last=False)[1]
        if self.events:
            return self.events.popleft()
        if self.stats is not None:
            frame, self.stats = self.stats, None
            return frame
        if self.ping is not None:
            frame, self.ping = self.ping, None
            return frame
        return None


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge("ecokit_console_stream_clients", "WebSocket clients connected", registry=registry)
        self.frames = Counter("ecokit_console_stream_frames", "frames sent", ["type"], registry=registry)
        self.coalesced = Counter("ecokit_console_stream_coalesced", "diff frames merged into one for clients "
                                 "that fell behind", registry=registry)
        self.closed_slow = Counter("ecokit_console_stream_closed_slow", "clients closed for taking nothing for "
                                   f"{SEND_TIMEOUT:g}s", registry=registry)


class Client:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.feed = ClientFeed()
        self.wake = asyncio.Event()


class Hub:
    def __init__(self, store: FleetStore, *, batch_interval: float, stats_interval: float,
                 stats: Callable[[], dict[str, Any]], metrics: StreamMetrics, log: logging.Logger) -> None:
        self.store = store
        self.batch_interval = batch_interval
        self.stats_interval = stats_interval
        self.stats = stats
        self.metrics = metrics
        self.log = log
        self.clients: set[Client] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: list[asyncio.Task[None]] = []

    # -- producers ----------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tasks = [asyncio.create_task(self._diffs(), name="diffs"),
                      asyncio.create_task(self._periodic(), name="stats")]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.websocket.close(code=1001)

    def _wake_all(self) -> None:
        for client in self.clients:
            client.wake.set()

    def batch(self) -> None:
        """Take the store's changes and offer one diff frame to every client."""
        with self.store.lock:
            vehicles, removed = self.store.take_changes()
        if not (vehicles or removed) or not self.clients:
            return
        frame = dumps({"type": "diff", "ts": now_ms(), "vehicles": vehicles, "removed": removed})
        ids = [v["id"] for v in vehicles]
        merged = 0
        for client in self.clients:
            before = client.feed.coalesced
            client.feed.offer_diff(frame, ids, removed)
            merged += client.feed.coalesced - before
        if merged:
            self.metrics.coalesced.inc(merged)
        self._wake_all()

    async def _diffs(self) -> None:
        # A fixed rate, not a fixed pause: the time a batch takes does not stretch the interval.
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.batch_interval
            now = loop.time()
            if due < now:  # fell behind (a stalled machine): start again from now
                due = now
            await asyncio.sleep(due - now)
            try:
                self.batch()
            except Exception:
                self.log.exception("building a diff failed")

    async def _periodic(self) -> None:
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(self.stats_interval)
            if not self.clients:
                continue
            try:
                frame = dumps({"type": "stats", **self.stats()})
            except Exception:
                self.log.exception("building the stats frame failed")
                continue
            ping = None
            if time.monotonic() - last_ping >= PING_INTERVAL:
                last_ping = time.monotonic()
                ping = dumps({"type": "ping", "ts": now_ms()})
            for client in self.clients:
                client.feed.offer_stats(frame)
                if ping is not None:
                    client.feed.offer_ping(ping)
            self._wake_all()

    def _offer_commands(self, commands: list[dict[str, Any]]) -> None:
        if not self.clients:
            return
        frames = [(c["id"], dumps({"type": "command", "command": c})) for c in commands]
        for client in self.clients:
            for cid, frame in frames:
                client.feed.offer_command(cid, frame)
        self._wake_all()

    def _offer_event(self, event: dict[str, Any]) -> None:
        if not self.clients:
            return
        frame = dumps({"type": "event", "event": event})
        for client in self.clients:
            client.feed.offer_event(frame)
        self._wake_all()

    def publish_commands(self, commands: list[dict[str, Any]]) -> None:
        """Thread-safe: command state changes for every client."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._offer_commands, commands)

    def publish_event(self, event: dict[str, Any]) -> None:
        """Thread-safe: an event (geofence enter/exit, an alert) for every client."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._offer_event, event)

    # -- one client ---------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Run one accepted client until it leaves (or is too slow)."""
        client = Client(websocket)
        with self.store.lock:
            vehicles = self.store.snapshot()
        # Registered in the same loop turn as the snapshot: no change falls in between.
        self.clients.add(client)
        self.metrics.clients.set(len(self.clients))
        snapshot = dumps({"type": "snapshot", "ts": now_ms(), "vehicles": vehicles})
        reader = asyncio.create_task(self._read(websocket))
        try:
            if await self._send(client, snapshot, "snapshot"):
                await self._send_loop(client, reader)
        finally:
            self.clients.discard(client)
            self.metrics.clients.set(len(self.clients))
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, websocket: WebSocket) -> None:
        """Drain what the client sends (nothing is required) until it disconnects."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    async def _send_loop(self, client: Client, reader: asyncio.Task[None]) -> None:
        while not reader.done():
            waiter = asyncio.create_task(client.wake.wait())
            done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                waiter.cancel()
                return
            client.wake.clear()
            while (item := client.feed.next()) is not None:
                if isinstance(item, Coalesced):
                    kind, data = "diff", self._coalesced_frame(item)
                else:
                    kind, data = _frame_type(item), item
                if not await self._send(client, data, kind):
                    return

    def _coalesced_frame(self, item: Coalesced) -> bytes:
        with self.store.lock:
            vehicles, gone = self.store.lite_of(item.ids)
        present = {v["id"] for v in vehicles}
        removed = sorted((item.removed | set(gone)) - present)
        return dumps({"type": "diff", "ts": now_ms(), "vehicles": vehicles, "removed": removed})

    async def _send(self, client: Client, data: bytes, kind: str) -> bool:
        ws = client.websocket
        if ws.application_state != WebSocketState.CONNECTED:
            return False
        try:
            await asyncio.wait_for(ws.send_text(data.decode()), timeout=SEND_TIMEOUT)
        except TimeoutError:
            self.metrics.closed_slow.inc()
            self.log.info("closed a stream client that took nothing for 30 s", extra={"code": CLOSE_TOO_SLOW})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=CLOSE_TOO_SLOW), timeout=1.0)
            return False
        except (WebSocketDisconnect, RuntimeError, OSError):
            return False
        self.metrics.frames.labels(kind).inc()
        return True


def _frame_type(frame: bytes) -> str:
    # Every frame starts with {"type":"<kind>" (orjson keeps insertion order).
    end = frame.find(b'"', 9)
    return frame[9:end].decode() if frame.startswith(b'{"type":"') and end > 9 else "other"
