"""What a simulation counts as it runs (``Stats``), the status line's numbers (``Snapshot``)
and the final ``Summary``. Pure data; ``ecokit.sim.reporting`` fills them."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

ERRORS_KEPT = 20


@dataclass
class Stats:
    """Live counters; the status line and the summary read them."""

    target: int = 0
    connected: int = 0
    ever_connected: int = 0
    produced: int = 0  # telemetry messages made by the vehicles
    sent: int = 0  # messages handed to the network (live or flushed)
    acked: int = 0  # QoS 1 acknowledgements from the broker
    flushed: int = 0  # messages that went through the offline queue
    reconnects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    errors: int = 0
    commands: int = 0
    shadow_reports: int = 0  # update requests sent (on connect, on change, after a delta)
    shadow_deltas: int = 0  # desired publish_interval values applied
    shadow_rejected: int = 0  # requests the shadow service refused
    shadow_sync_seconds: float = 0.0  # connected -> every vehicle heard back from its shadow
    started: float = field(default_factory=time.monotonic)
    publishing_since: float | None = None
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))
    drift_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 3_600_000_000, 3))

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_errors.append(message)


@dataclass(frozen=True)
class Snapshot:
    """One status-line's worth of numbers."""

    elapsed: float
    connected: int
    target: int
    produced: int
    sent: int
    acked: int
    queued: int
    dropped: int
    reconnects: int
    errors: int
    commands: int
    phase: str
    remaining: float | None
    shadow: bool = False
    shadow_reports: int = 0
    shadow_deltas: int = 0


@dataclass(frozen=True)
class Summary:
    vehicles: int
    connected_at_end: int
    ever_connected: int
    produced: int
    sent: int
    acked: int
    flushed: int
    queued_left: int
    dropped: int
    reconnects: int
    disconnects: int
    connect_failures: int
    errors: int
    commands: int
    publish_seconds: float
    drift_ms: dict[str, float]
    per_vehicle: dict[str, int]
    last_errors: list[str]
    shadow: bool = False
    shadow_reports: int = 0
    shadow_deltas: int = 0
    shadow_rejected: int = 0
    shadow_sync_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.produced / self.publish_seconds if self.publish_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "per_vehicle"} | {
            "rate": round(self.rate, 1)}
