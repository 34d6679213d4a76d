"""A command's life (ThingsBoard-style), event by event, and the engine that drives it."""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ecokit.console.commands import CommandEngine, CommandMetrics, CommandStore, parse_ack
from ecokit.console.lifecycle import CommandRecord

T0 = 1_000_000


def record(**over: Any) -> CommandRecord:
    fields: dict[str, Any] = {"id": "c1", "batch": "b1", "vehicle": "v1", "command": "ping", "args": {},
                              "created": T0, "expires": T0 + 60_000, "timeout_ms": 5_000}
    fields.update(over)
    return CommandRecord(**fields)


def states(r: CommandRecord) -> list[str]:
    return [s for s, _ in r.history]


def test_the_happy_path_queued_sent_delivered_succeeded() -> None:
    r = record()
    assert r.mark_sent(T0 + 10)
    assert r.on_puback(T0 + 12, code=0, reason="Success")
    assert r.on_ack(T0 + 30, result="ok", detail="pong", latency_ms=0.4) == "applied"
    assert states(r) == ["queued", "sent", "delivered", "succeeded"]
    assert (r.result, r.detail, r.latency_ms, r.round_trip_ms) == ("ok", "pong", 0.4, 20.0)
    assert r.final


def test_a_device_error_fails_the_command_with_its_detail() -> None:
    r = record()
    r.mark_sent(T0)
    assert r.on_ack(T0 + 5, result="error", detail="interval out of range", latency_ms=0.1) == "applied"
    assert (r.state, r.detail) == ("failed", "interval out of range")


def test_an_ack_can_overtake_the_puback() -> None:
    r = record()
    r.mark_sent(T0)
    r.on_ack(T0 + 2, result="ok", detail="", latency_ms=None)
    assert not r.on_puback(T0 + 3, code=0, reason="Success")
    assert states(r) == ["queued", "sent", "succeeded"]


def test_no_matching_subscribers_puts_it_back_in_the_queue() -> None:
    r = record()
    r.mark_sent(T0)
    assert r.on_puback(T0 + 1, code=0x10, reason="No matching subscribers")
    assert r.state == "queued"
    assert r.sent_at is None
    assert r.mark_sent(T0 + 2)


def test_a_broker_refusal_fails_the_command() -> None:
    r = record()
    r.mark_sent(T0)
    assert r.on_puback(T0 + 1, code=0x87, reason="Not authorized")
    assert r.state == "failed"
    assert "Not authorized" in (r.detail or "")


def test_no_ack_within_the_timeout_is_timed_out() -> None:
    r = record()
    r.mark_sent(T0)
    r.on_puback(T0 + 1, code=0, reason="Success")
    assert r.next_deadline() == T0 + 5_000
    assert not r.check_deadlines(T0 + 4_999)
    assert r.check_deadlines(T0 + 5_000)
    assert r.state == "timed_out"


def test_a_queued_command_expires() -> None:
    r = record()
    assert r.next_deadline() == T0 + 60_000
    assert not r.check_deadlines(T0 + 59_999)
    assert r.check_deadlines(T0 + 60_000)
    assert r.state == "expired"
    assert not r.mark_sent(T0 + 60_001)


def test_final_states_ignore_later_events_and_say_how_late() -> None:
    done = record()
    done.mark_sent(T0)
    done.on_ack(T0 + 1, result="ok", detail="", latency_ms=None)
    assert done.on_ack(T0 + 2, result="ok", detail="", latency_ms=None) == "duplicate"
    late = record()
    late.mark_sent(T0)
    late.check_deadlines(T0 + 10_000)
    assert late.on_ack(T0 + 10_001, result="ok", detail="", latency_ms=None) == "late"
    assert late.state == "timed_out"
    assert not late.check_deadlines(T0 + 99_999)


def test_the_api_shape() -> None:
    doc = record().to_api()
    assert set(doc) == {"id", "batch", "vehicle", "command", "args", "state", "created", "updated", "created_at",
                        "updated_at", "expires", "timeout_s", "result", "detail", "latency_ms", "round_trip_ms",
                        "history"}
    assert doc["history"] == [{"state": "queued", "ts": T0}]
    assert doc["created_at"] == "1970-01-01T00:16:40.000Z"


@pytest.mark.parametrize(("topic", "payload", "error"), [
    ("fleet/v1/commands/ack", b"nope", "not_json"),
    ("fleet/v1/commands/ack", b'{"result": "ok"}', "missing_field"),
    ("fleet/v1/commands/ack", b'{"id": "c1", "result": "maybe"}', "bad_value"),
    ("fleet/v1/status", b'{"id": "c1", "result": "ok"}', "not an ack topic"),
])
def test_bad_acks_are_refused(topic: str, payload: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_ack(topic, payload)


class Engine:
    """A CommandEngine on a real SQLite file, its clock and publisher in the test's hands."""

    def __init__(self, path: Path, online: set[str]) -> None:
        self.now = T0
        self.online = online
        self.published: list[tuple[str, bytes]] = []
        self.expiries: list[int] = []
        self.changes: list[tuple[str, str]] = []
        self.engine = self.make(path)

    def make(self, path: Path) -> CommandEngine:
        engine = CommandEngine(CommandStore(path), is_online=lambda v: v in self.online,
                               on_change=lambda rs: self.changes.extend((r.id, r.state) for r in rs),
                               metrics=CommandMetrics(CollectorRegistry()), log=logging.getLogger("test"),
                               clock=lambda: self.now)
        engine.publish = self.publish
        engine.connected = True
        return engine

    def publish(self, topic: str, payload: bytes, expiry_s: int) -> int:
        self.published.append((topic, payload))
        self.expiries.append(expiry_s)
        return len(self.published)


def test_the_engine_sends_to_online_vehicles_and_queues_for_offline_ones(tmp_path: Path) -> None:
    e = Engine(tmp_path / "c.db", online={"v1"})
    batch, records = e.engine.submit(["v1", "v2"], "set_interval", {"seconds": 2}, timeout_s=5, expires_s=60)
    assert [r.state for r in records] == ["sent", "queued"]
    assert [t for t, _ in e.published] == ["fleet/v1/commands"]
    assert e.expiries == [60], "the broker drops it when the command expires"
    assert b'"name":"set_interval"' in e.published[0][1]
    assert records[0].id.encode() in e.published[0][1]
    e.engine.handle("puback", (1, 0, "Success"))
    e.engine.handle("ack", ("fleet/v1/commands/ack", f'{{"id": "{records[0].id}", "result": "ok"}}'.encode()))
    assert e.engine.get(records[0].id).state == "succeeded"  # type: ignore[union-attr]
    # v2 comes online: its queued command goes out with the same id.
    e.online.add("v2")
    e.engine.handle("online", ["v2"])
    assert e.published[-1][0] == "fleet/v2/commands"
    assert records[1].id.encode() in e.published[-1][1]
    assert [c.state for c in e.engine.store.recent(batch=batch)] == ["sent", "succeeded"]


def test_a_vehicle_cannot_answer_another_vehicles_command(tmp_path: Path) -> None:
    e = Engine(tmp_path / "c.db", online={"v1"})
    _, (r,) = e.engine.submit(["v1"], "ping", {}, timeout_s=5, expires_s=60)
    e.engine.handle("ack", ("fleet/v9/commands/ack", f'{{"id": "{r.id}", "result": "ok"}}'.encode()))
    assert e.engine.get(r.id).state == "sent"  # type: ignore[union-attr]


def test_deadlines_fire_on_the_engines_clock(tmp_path: Path) -> None:
    e = Engine(tmp_path / "c.db", online={"v1"})
    _, (sent, queued) = e.engine.submit(["v1", "v2"], "ping", {}, timeout_s=1, expires_s=2)
    e.now = T0 + 1000
    e.engine.handle("tick", None)
    assert e.engine.get(sent.id).state == "timed_out"  # type: ignore[union-attr]
    assert e.engine.get(queued.id).state == "queued"  # type: ignore[union-attr]
    e.now = T0 + 2000
    e.engine.handle("tick", None)
    assert e.engine.get(queued.id).state == "expired"  # type: ignore[union-attr]
    assert e.engine.counts()["queued"] == 0


def test_commands_and_their_timers_survive_a_restart(tmp_path: Path) -> None:
    e = Engine(tmp_path / "c.db", online=set())
    _, (r,) = e.engine.submit(["v1"], "ping", {}, timeout_s=1, expires_s=5)
    e.engine.store.close()
    again = e.make(tmp_path / "c.db")
    assert again.get(r.id).state == "queued"  # type: ignore[union-attr]
    e.online.add("v1")
    again.handle("connected", None)  # on (re)connect, queued commands of online vehicles go out
    assert again.get(r.id).state == "sent"  # type: ignore[union-attr]
    e.now = T0 + 1000
    again.handle("tick", None)
    assert again.get(r.id).state == "timed_out"  # type: ignore[union-attr]
    assert [s for s, _ in again.store.get(r.id).history] == ["queued", "sent", "timed_out"]  # type: ignore[union-attr]


def test_nothing_is_sent_while_the_console_is_not_connected(tmp_path: Path) -> None:
    e = Engine(tmp_path / "c.db", online={"v1"})
    e.engine.handle("disconnected", "gone")
    _, (r,) = e.engine.submit(["v1"], "ping", {}, timeout_s=1, expires_s=60)
    assert r.state == "queued"
    assert "not connected" in (r.detail or "")
    assert e.published == []
    e.engine.handle("connected", None)
    assert e.engine.get(r.id).state == "sent"  # type: ignore[union-attr]


def test_events_queue_is_the_engines_own(tmp_path: Path) -> None:
    e = Engine(tmp_path / "c.db", online={"v1"})
    assert isinstance(e.engine.events, queue.Queue)
    e.engine.vehicles_online(["v1"])  # nothing queued for v1: nothing to do
    assert e.engine.events.empty()
