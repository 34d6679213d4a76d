"""The intake handles every message on its own: unusable ones are counted by reason and the
next one is handled as if nothing happened (no broker needed: the batch is given)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ecokit.console.intake import Intake, IntakeMetrics
from ecokit.console.state import FleetStore
from ecokit.console.stats import LatencyWindow, RateMeter
from ecokit.contract import MqttSettings


def telemetry(vehicle: str, **over: Any) -> bytes:
    doc = {"v": 1, "vehicle": vehicle, "seq": 1, "ts": int(time.time() * 1000) - 20, "lat": 48.85, "lng": 2.35,
           "speed": 30.0, "heading": 90.0, "fuel": 50.0, "odometer": 1.0, "engine": True, "status": "moving"}
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.fixture
def intake() -> Intake:
    online: list[str] = []
    it = Intake(MqttSettings(host="127.0.0.1", port=1, username="ecokit-console", password="x"), client_id="test",
                store=FleetStore(100), rate=RateMeter(), latency=LatencyWindow(), on_online=online.extend,
                metrics=IntakeMetrics(CollectorRegistry()), log=logging.getLogger("test"))
    it.came_online = online  # type: ignore[attr-defined]
    return it


def test_a_batch_with_bad_messages_keeps_every_good_one(intake: Intake) -> None:
    batch = [
        ("fleet/v1/telemetry", telemetry("v1"), 0, False, 0),
        ("fleet/v2/telemetry", b"{not json", 0, False, 0),
        ("fleet/v3/telemetry", telemetry("v3", lat=123.0), 0, False, 0),
        ("fleet/a+b/telemetry", telemetry("x"), 0, False, 0),
        ("fleet/v4/status", b'{"state": "online", "ts": 1}', 1, True, 17),
        ("fleet/v5/telemetry", telemetry("v5"), 0, False, 0),
    ]
    acks = intake.handle(batch)
    assert acks == [17]
    assert sorted(intake.store.ids()) == ["v1", "v4", "v5"]
    assert intake.errors == {"not_json": 1, "out_of_range": 1, "bad_topic": 1}
    assert sorted(intake.came_online) == ["v1", "v4", "v5"]  # type: ignore[attr-defined]
    # Heard from again while online: reported again (a command queued meanwhile goes out).
    intake.handle([("fleet/v1/telemetry", telemetry("v1", ts=int(time.time() * 1000)), 0, False, 0)])
    assert sorted(intake.came_online) == ["v1", "v1", "v4", "v5"]  # type: ignore[attr-defined]
    assert intake.rate.total == 7
    summary = intake.latency.summary(time.time())
    assert summary["samples"] == 3
    assert 0 <= summary["avg"] < 5000


def test_a_bug_costs_one_message_not_the_intake(intake: Intake, monkeypatch: pytest.MonkeyPatch) -> None:
    original = intake.store.on_telemetry

    def flaky(vehicle: str, doc: Any) -> tuple[bool, int | None]:
        if vehicle == "v2":
            raise KeyError("surprise")
        return original(vehicle, doc)

    monkeypatch.setattr(intake.store, "on_telemetry", flaky)
    intake.handle([("fleet/v1/telemetry", telemetry("v1"), 0, False, 0),
                   ("fleet/v2/telemetry", telemetry("v2"), 0, False, 0),
                   ("fleet/v3/telemetry", telemetry("v3"), 0, False, 0)])
    assert sorted(intake.store.ids()) == ["v1", "v3"]
    assert intake.errors == {"internal": 1}


def test_processor_events_and_alerts_become_feed_entries_with_known_keys_only() -> None:
    events: list[dict[str, Any]] = []
    it = Intake(MqttSettings(host="127.0.0.1", port=1, username="ecokit-console", password="x"), client_id="test",
                store=FleetStore(100), rate=RateMeter(), latency=LatencyWindow(), on_online=lambda ids: None,
                metrics=IntakeMetrics(CollectorRegistry()), log=logging.getLogger("test"), on_event=events.append)
    enter = {"v": 1, "vehicle": "v1", "type": "geofence_enter", "geofence": "depot", "name": "Depot", "tags": ["d"],
             "ts": 1_700_000_000_000, "confirmed_ts": 1_700_000_000_000, "lat": 48.8, "lng": 2.3,
             "source": "processor", "extra": "x" * 1000}
    alert = {"alert": "fast", "state": "firing", "severity": "warning", "condition": "speed > 1", "subject": "speed",
             "ts": 1_700_000_001_000, "since": 1_700_000_000_000, "value": 3.5}
    acks = it.handle([
        ("fleet/v1/events", json.dumps(enter).encode(), 1, False, 1),
        ("fleet/v1/alerts", json.dumps(alert).encode(), 1, False, 2),
        ("fleet/v1/alerts", b"[1, 2]", 1, False, 3),
        ("fleet/v1/events", json.dumps({"type": "geofence_exit"}).encode(), 1, False, 4),
        ("fleet/bad+id/events", json.dumps(enter).encode(), 1, False, 5),
    ])
    assert acks == [1, 2, 3, 4, 5]
    assert [e["kind"] for e in events] == ["geofence", "alert"]
    assert events[0] == {k: v for k, v in enter.items() if k not in ("v", "vehicle", "source", "extra")} | {
        "kind": "geofence", "vehicle": "v1"}
    assert events[1]["value"] == 3.5
    assert it.errors == {"bad_event": 2, "bad_topic": 1}
    assert len(it.store) == 0  # events never create vehicles
