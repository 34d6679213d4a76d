"""What the parts of the :class:`~ecokit.sim.runner.Simulator` share: its settings, one
vehicle's session state, and the state every part reads (``SimulatorBase``).

The Simulator is composed of one mixin per concern (as docker-py composes its API client):
``session`` (connections, sending, the offline queue, closing; each vehicle's MQTT connection
is a link, ``ecokit.sim.links``: the fast path or paho), ``schedule``
(when each fix is due), ``shadow_sync`` (device shadows), ``reporting`` (status line, summary);
``runner`` holds the public API, the run and command handling.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecokit.errors import UsageError
from ecokit.mqtt.target import BrokerTarget, ClientAuth
from ecokit.sim.fleet import SimVehicle
from ecokit.sim.links import CLIENTS, LinkDriver, VehicleLink
from ecokit.sim.offline import OfflineQueue
from ecokit.sim.shadow import VehicleShadow
from ecokit.sim.stats import Snapshot, Stats

EARLY = 0.001  # s: fixes due this soon are sent in the current batch (|drift| is what is recorded)
FLUSH_WINDOW = 200  # unacknowledged messages a vehicle may have while flushing its queue


@dataclass(frozen=True)
class SimSettings:
    qos: int = 1
    protocol: int = 5  # 5 or 4 (MQTT 3.1.1)
    keepalive: int = 30
    session_expiry: int = 3600
    duration: float | None = None  # seconds of publishing
    count: int | None = None  # telemetry messages per vehicle
    queue_path: Path = Path("sim-queue.sqlite")
    queue_limit: int = 10_000
    keep_queue: bool = False
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    connect_concurrency: int = 64
    connect_timeout: float = 60.0  # initial connect phase
    drain_timeout: float = 15.0
    flat_out: bool = False
    client_id_prefix: str = ""
    status_interval: float = 0.5
    shadow: bool = False  # report to things/{id}/shadow and apply desired.publish_interval
    shadow_sync_timeout: float = 10.0  # before publishing: wait this long at most for the shadows' answers
    client: str = "fast"  # each vehicle's MQTT client: "fast" (ecokit.mqtt.publisher) or "paho"

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise UsageError(f"--client {self.client!r}: expected {' or '.join(CLIENTS)}")
        if self.qos not in (0, 1):
            raise UsageError(f"--qos {self.qos}: the simulator publishes telemetry at QoS 0 or 1")
        if self.protocol not in (4, 5):
            raise UsageError("--mqtt must be 5 or 3.1.1")
        if self.duration is not None and self.duration <= 0:
            raise UsageError("--duration must be positive")
        if self.count is not None and self.count < 1:
            raise UsageError("--count must be at least 1")
        if self.flat_out and self.duration is None and self.count is None:
            raise UsageError("flat-out mode (--rate 0) needs --count or --duration")


class VehicleSession:
    """One vehicle's MQTT session: its link (the connection), and the session's state."""

    __slots__ = ("attempt", "auth", "ever", "flushing", "index", "last_due", "link", "next_dt", "online",
                 "reconnecting", "seen_commands", "shadow", "vehicle")

    link: VehicleLink

    def __init__(self, index: int, vehicle: SimVehicle, auth: ClientAuth) -> None:
        self.index = index
        self.vehicle = vehicle
        self.auth = auth
        self.online = False
        self.flushing = False
        self.ever = False
        self.reconnecting = False
        self.attempt = 0
        self.last_due: float | None = None
        self.next_dt = 0.0  # simulated seconds to the next fix: the scheduled delay itself, so the
        # physics never sees clock arithmetic (same seed, same fixes, whatever the start time)
        self.seen_commands: deque[str] | None = None
        self.shadow: VehicleShadow | None = None

    @property
    def inflight(self) -> int:
        """QoS 1 messages waiting for their PUBACK."""
        return self.link.unacknowledged


class SimulatorBase:
    """The state the Simulator's parts share (set in ``Simulator.__init__`` and ``run``), the
    helpers they all use, and the methods one part calls in another."""

    fleet: list[SimVehicle]
    target: BrokerTarget
    auth: Callable[[str], ClientAuth]
    settings: SimSettings
    progress: Callable[[Snapshot], None] | None
    on_interval: Callable[[SimVehicle, float], None] | None
    stats: Stats
    queue: OfflineQueue | None
    discarded: int
    _loop: asyncio.AbstractEventLoop
    _links: LinkDriver
    _slots: asyncio.Semaphore
    _waiter: asyncio.Future[None] | None
    _stopping: bool
    _abort: bool
    _publish_stopped: float | None
    _publish_end: float | None
    _phase: str
    _devices: list[VehicleSession]
    _by_id: dict[str, VehicleSession]
    _heap: list[tuple[float, int, int]]
    _generation: list[int]
    _connected_at_end: int | None
    _jitter: random.Random
    _tasks: set[asyncio.Task[Any]]

    def _wakeup(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what one part calls in another (defined by the part named) ------------------------

    def _publish(self, dev: VehicleSession, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        raise NotImplementedError  # session

    def _send(self, dev: VehicleSession, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        raise NotImplementedError  # session

    def _interval_changed(self, vehicle: SimVehicle, previous: float) -> None:
        raise NotImplementedError  # schedule

    async def _sync_shadows(self) -> None:
        raise NotImplementedError  # shadow_sync

    def _shadow_interval(self, vehicle: SimVehicle, seconds: float) -> None:
        raise NotImplementedError  # shadow_sync

    def _shadow_changes(self, dev: VehicleSession) -> None:
        raise NotImplementedError  # shadow_sync

    def link_message(self, dev: VehicleSession, topic: str, payload: bytes) -> None:
        raise NotImplementedError  # runner (commands and shadow answers)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
