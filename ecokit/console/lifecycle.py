"""A command's life, ThingsBoard-style (docs/console.md, Commands). Pure: no I/O, every
event carries its own clock (epoch ms).

    queued ──sent──▶ sent ──PUBACK──▶ delivered ──device ack──▶ succeeded | failed
      │  ▲             │ └─PUBACK "no matching subscribers"─▶ queued
      │  └─────────────┘ └─PUBACK refusal─▶ failed
      └─expires passes─▶ expired          sent | delivered ──timeout_s without an ack──▶ timed_out

``succeeded``, ``failed``, ``timed_out`` and ``expired`` are final: later events change
nothing (a late ack is reported as such, so it can be counted).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["queued", "sent", "delivered", "succeeded", "failed", "timed_out", "expired"]
STATES: tuple[State, ...] = ("queued", "sent", "delivered", "succeeded", "failed", "timed_out", "expired")
FINAL: frozenset[str] = frozenset(("succeeded", "failed", "timed_out", "expired"))
AckOutcome = Literal["applied", "late", "duplicate"]


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class CommandRecord:
    id: str
    batch: str
    vehicle: str
    command: str
    args: dict[str, Any]
    created: int
    expires: int
    timeout_ms: int
    state: State = "queued"
    updated: int = 0
    sent_at: int | None = None
    result: str | None = None
    detail: str | None = None
    latency_ms: float | None = None
    round_trip_ms: float | None = None
    history: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append((self.state, self.created))
        self.updated = self.updated or self.created

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def _to(self, state: State, now: int, detail: str | None = None) -> bool:
        self.state = state
        self.updated = now
        if detail is not None:
            self.detail = detail
        self.history.append((state, now))
        return True

    def mark_sent(self, now: int) -> bool:
        """Published (QoS 1) to the vehicle."""
        if self.state != "queued":
            return False
        self.sent_at = now
        return self._to("sent", now)

    def requeue(self, now: int, detail: str) -> bool:
        """Not delivered after all (the broker has no subscriber, the connection dropped)."""
        if self.state not in ("sent", "delivered"):
            return False
        self.sent_at = None
        return self._to("queued", now, detail)

    def on_puback(self, now: int, *, code: int, reason: str) -> bool:
        """The broker's PUBACK: 0 success, 0x10 no matching subscribers, >= 0x80 a refusal."""
        if self.state != "sent":
            return False
        if code == 0:
            return self._to("delivered", now)
        if code == 0x10:
            return self.requeue(now, "the broker has no subscriber for the vehicle's commands (not connected)")
        if code >= 0x80:
            return self._to("failed", now, f"the broker refused the command: {reason}")
        return False

    def on_ack(self, now: int, *, result: str, detail: str | None, latency_ms: float | None) -> AckOutcome:
        """The device's acknowledgement (``result`` ok | error)."""
        if self.final:
            return "duplicate" if self.state in ("succeeded", "failed") and self.result is not None else "late"
        self.result = result
        self.latency_ms = latency_ms
        if self.sent_at is not None:
            self.round_trip_ms = float(max(0, now - self.sent_at))
        self._to("succeeded" if result == "ok" else "failed", now, detail if detail is not None else "")
        return "applied"

    def check_deadlines(self, now: int) -> bool:
        """Expire a queued command, time out one that was sent and never answered."""
        if self.state == "queued" and now >= self.expires:
            return self._to("expired", now, "the vehicle did not come online before the command expired")
        if self.state in ("sent", "delivered") and self.sent_at is not None and now >= self.sent_at + self.timeout_ms:
            return self._to("timed_out", now, f"no acknowledgement from the vehicle within {self.timeout_ms / 1000:g}s")
        return False

    def next_deadline(self) -> int | None:
        if self.state == "queued":
            return self.expires
        if self.state in ("sent", "delivered") and self.sent_at is not None:
            return self.sent_at + self.timeout_ms
        return None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "batch": self.batch, "vehicle": self.vehicle, "command": self.command,
            "args": self.args, "state": self.state, "created": self.created, "updated": self.updated,
            "created_at": iso(self.created), "updated_at": iso(self.updated), "expires": self.expires,
            "timeout_s": self.timeout_ms / 1000, "result": self.result, "detail": self.detail,
            "latency_ms": self.latency_ms, "round_trip_ms": self.round_trip_ms,
            "history": [{"state": s, "ts": t} for s, t in self.history],
        }
