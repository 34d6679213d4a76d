"""The console service: the MQTT intake, the command engine, the stream hub and the HTTP
app, wired together and run by uvicorn (``python -m ecokit.console console.json``).

Threads: the intake (fast MQTT client) and the command engine each have their own; paho
runs the command connection's; uvicorn's event loop serves HTTP and WebSockets. They meet
only in ``FleetStore`` (a lock held for microseconds) and in thread-safe queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from ecokit.console.commands import CommandChannel, CommandEngine, CommandMetrics, CommandStore
from ecokit.console.contract import ConsoleServiceConfig
from ecokit.console.hub import Hub, StreamMetrics
from ecokit.console.intake import Intake, IntakeMetrics
from ecokit.console.lifecycle import CommandRecord
from ecokit.console.state import FleetStore
from ecokit.console.stats import BridgeProbe, LatencyWindow, RateMeter
from ecokit.geofence.store import GeofenceStore
from ecokit.shadow.client import ShadowClient
from ecokit.store.influx import InfluxV1

COOKIE = "ecokit_console"
REGISTRY_CHECK = 2.0  # seconds between checks of the device registry file
RECENT_EVENTS = 500  # geofence events and alerts kept for GET /api/events


class DeviceRegistry:
    """The stack's devices as ``devices.json`` lists them, re-read when the file changes."""

    def __init__(self, path: Path, log: logging.Logger) -> None:
        self.path = path
        self.log = log
        self.devices: dict[str, bool] = {}  # id → a client certificate was issued
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def reload(self, *, force: bool = False) -> bool:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp and not force:
            return False
        try:
            data = json.loads(self.path.read_text())
            devices = {str(d["id"]): bool(d.get("client_cert", False)) for d in data["devices"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.log.warning("cannot read the device registry; keeping the last one",
                             extra={"file": str(self.path), "error": str(exc)})
            return False
        self._stamp = stamp
        changed = devices != self.devices
        self.devices = devices
        if changed:
            self.log.info("device registry loaded", extra={"devices": len(devices)})
        return changed


class ConsoleService:
    def __init__(self, config: ConsoleServiceConfig, log: logging.Logger) -> None:
        self.config = config
        self.settings = config.settings
        self.log = log
        self.registry = CollectorRegistry()
        self.store = FleetStore(self.settings.max_vehicles)
        self.rate = RateMeter()
        self.latency = LatencyWindow()
        self.devices = DeviceRegistry(Path(config.devices.file), log)
        self.bridge = BridgeProbe(config.bridge_metrics)
        self.stop_event = threading.Event()
        self.cookie_value = hmac.new(config.token.encode(), b"ecokit-console-cookie", hashlib.sha256).hexdigest()
        self.hub = Hub(self.store, batch_interval=self.settings.batch_interval_ms / 1000,
                       stats_interval=self.settings.stats_interval_ms / 1000, stats=self.stats_body,
                       metrics=StreamMetrics(self.registry), log=log)
        self.engine = CommandEngine(CommandStore(config.database), is_online=self._is_online,
                                    on_change=self._commands_changed, metrics=CommandMetrics(self.registry),
                                    log=log, keep_days=self.settings.commands.keep_days)
        mqtt = config.mqtt
        self.channel = CommandChannel(mqtt, client_id=f"ecokit-console-{config.stack}", events=self.engine.events,
                                      log=log)
        # The latest geofence events and alerts, newest last, for pages that just opened.
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._events_lock = threading.Lock()
        self.intake = Intake(mqtt, client_id=f"ecokit-console-{config.stack}-intake-{uuid.uuid4().hex[:6]}",
                             store=self.store, rate=self.rate, latency=self.latency,
                             on_online=self.engine.vehicles_online, metrics=IntakeMetrics(self.registry), log=log,
                             on_event=self._event)
        vehicles = Gauge("ecokit_console_vehicles", "vehicles held in memory", registry=self.registry)
        vehicles.set_function(lambda: len(self.store))
        self._shadow: ShadowClient | None = None
        self._shadow_lock = threading.Lock()
        self.started = time.time()

    # -- glue ----------------------------------------------------------------------------

    def _is_online(self, vehicle: str) -> bool:
        with self.store.lock:
            return self.store.is_online(vehicle)

    def _event(self, event: dict[str, Any]) -> None:
        """A geofence event or alert from the intake thread: kept, and sent to every page."""
        with self._events_lock:
            self.events.append(event)
        self.hub.publish_event(event)

    def recent_events(self, limit: int, vehicle: str | None = None) -> list[dict[str, Any]]:
        """The latest events, newest first."""
        with self._events_lock:
            items = [e for e in reversed(self.events) if vehicle is None or e.get("vehicle") == vehicle]
        return items[:limit]

    def geofence_store(self) -> GeofenceStore | None:
        path = self.config.geofences.path
        return GeofenceStore(Path(path), label="the geofence file") if path else None

    def _commands_changed(self, records: list[CommandRecord]) -> None:
        self.hub.publish_commands([r.to_api() for r in records])

    def token_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.config.token.encode())

    def cookie_ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.cookie_value.encode())

    def influx(self) -> InfluxV1:
        return InfluxV1(self.config.influx.endpoint(), timeout=10.0)

    def shadow_client(self) -> ShadowClient:
        """The console's shadow client, connected on first use (and again after a failure)."""
        with self._shadow_lock:
            if self._shadow is None:
                m = self.config.mqtt
                client = ShadowClient(m.host, m.port, username=m.username, password=m.password,
                                      tls=m.tls_context(),
                                      client_id=f"ecokit-console-{self.config.stack}-shadow-{uuid.uuid4().hex[:6]}")
                self._shadow = client.connect()
            return self._shadow

    def drop_shadow_client(self) -> None:
        with self._shadow_lock:
            if self._shadow is not None:
                with contextlib.suppress(Exception):
                    self._shadow.close()
                self._shadow = None

    def stats_body(self) -> dict[str, Any]:
        now = time.time()
        with self.store.lock:
            counts = self.store.counts()
            stale = self.store.stale
        return {
            "ts": int(now * 1000),
            "vehicles": counts,
            "messages": {"rate": round(self.rate.rate(now), 1), "total": self.rate.total,
                         "errors": dict(self.intake.errors), "stale": stale},
            "latency_ms": self.latency.summary(now),
            "stream": {"clients": len(self.hub.clients)},
            "pipeline": {"bridge": self.bridge.summary},
        }

    def health(self) -> tuple[bool, str]:
        if not self.intake.alive:
            return False, f"the MQTT intake stopped: {self.intake.failure or 'not running'}"
        if not self.engine.alive:
            return False, f"the command engine stopped: {self.engine.failure or 'not running'}"
        return True, "ok"

    def ready(self) -> bool:
        return self.intake.ready.is_set() and self.channel.ready

    # -- lifecycle -------------------------------------------------------------------------

    async def _every(self, seconds: float, work: Any) -> None:
        while True:
            try:
                await asyncio.to_thread(work)
            except Exception:
                self.log.exception("a periodic task failed")
            await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, lambda: self.devices.reload(force=True))
        self.intake.start(self.stop_event)
        self.engine.start(self.channel)
        self.channel.start()
        await self.hub.start()
        tasks = [asyncio.create_task(self._every(self.bridge.interval, self.bridge.refresh)),
                 asyncio.create_task(self._every(REGISTRY_CHECK, self.devices.reload))]
        self.log.info("console started", extra={"url": f"http://{self.config.http.host}:{self.config.http.port}/",
                                                "vehicles_max": self.settings.max_vehicles})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await self.hub.stop()
            self.stop_event.set()
            await asyncio.to_thread(self.shutdown)
            self.log.info("console stopped", extra={"commands": self.engine.counts()})

    def shutdown(self) -> None:
        self.intake.join(5)
        self.channel.stop()
        self.engine.stop()
        self.engine.store.close()
        self.drop_shadow_client()
        self.bridge.close()
