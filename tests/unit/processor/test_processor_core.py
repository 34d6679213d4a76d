"""What the fleet processor derives from each message (no broker), and how the stack
hands it its geofences and alerts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ecokit.config.alerts import AlertRule, GeofencesConfig
from ecokit.config.rules import ProcessorConfig
from ecokit.geofence import parse_geofences
from ecokit.processor.core import MAX_FUTURE_MS, ProcessorCore
from ecokit.stack import Stack
from ecokit.testing import write_project

NOW = 1_700_000_000.0


def zone(fid: str, tags: list[str], x0: float = 2.30) -> dict[str, Any]:
    ring = [[x0, 48.80], [x0 + 0.01, 48.80], [x0 + 0.01, 48.81], [x0, 48.81], [x0, 48.80]]
    return {"type": "Feature", "id": fid, "properties": {"name": fid, "tags": tags},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


def core(alerts: dict[str, Any] | None = None, **geofences: Any) -> ProcessorCore:
    fences = parse_geofences({"type": "FeatureCollection", "features": [zone("red", ["restricted"])]},
                             source="test").fences
    return ProcessorCore(ProcessorConfig(offline_after=60, status_interval=0), GeofencesConfig(**geofences),
                         {n: AlertRule.model_validate(r) for n, r in (alerts or {}).items()}, fences)


def fix(ts_s: float, lng: float, speed: float = 50.0) -> dict[str, Any]:
    return {"v": 1, "vehicle": "v1", "ts": int(ts_s * 1000), "lat": 48.805, "lng": lng, "speed": speed}


def test_a_fix_gives_status_event_and_zone_alert_together() -> None:
    c = core({"restricted": {"when": "enter tag:restricted", "severity": "critical"}})
    first = c.on_telemetry("v1", fix(NOW, 2.29), NOW)
    assert [u.state for u in first.status] == ["online"]
    assert first.events == first.alerts == []
    inside = c.on_telemetry("v1", fix(NOW + 1, 2.305), NOW + 1)
    assert [(e.type, e.geofence) for e in inside.events] == [("geofence_enter", "red")]
    assert [(a.alert, a.state, a.severity) for a in inside.alerts] == [("restricted", "firing", "critical")]
    outside = c.on_telemetry("v1", fix(NOW + 2, 2.35), NOW + 2)
    assert [e.type for e in outside.events] == ["geofence_exit"]
    assert [a.state for a in outside.alerts] == ["resolved"]


def test_stale_duplicate_and_future_fixes_are_skipped_with_their_reason() -> None:
    c = core({"fast": {"when": "speed > 100"}})
    assert c.on_telemetry("v1", fix(NOW, 2.305), NOW).skipped is None
    late = c.on_telemetry("v1", fix(NOW - 5, 2.35, speed=150), NOW)
    assert (late.skipped, late.events, late.alerts) == ("out_of_order", [], [])
    assert c.on_telemetry("v1", fix(NOW, 2.35), NOW).skipped == "duplicate"
    ahead = c.on_telemetry("v1", fix(NOW + MAX_FUTURE_MS / 1000 + 60, 2.35, speed=150), NOW)
    assert (ahead.skipped, ahead.alerts) == ("future", [])
    # A broken clock did not freeze the vehicle: the next correct fix still counts.
    assert [e.type for e in c.on_telemetry("v1", fix(NOW + 1, 2.35), NOW + 1).events] == ["geofence_exit"]


def test_unusable_payloads_are_ignored() -> None:
    c = core()
    assert c.on_telemetry("v1", None, NOW).ignored
    assert c.on_telemetry("v1", {"ts": 1, "lat": 95, "lng": 0}, NOW).ignored
    assert c.on_status("v1", {"state": "online", "source": "processor"}, NOW).ignored


def test_silence_fires_offline_and_the_device_coming_back_resolves_it() -> None:
    c = core({"silent": {"when": "offline for 10s"}})
    c.on_telemetry("v1", fix(NOW, 2.29), NOW)
    assert c.tick(NOW + 5).alerts == []
    assert [a.state for a in c.tick(NOW + 11).alerts] == ["firing"]
    # A last will is not the vehicle speaking; its online status is.
    assert c.on_status("v1", {"state": "offline", "source": "device", "ts": 1}, NOW + 12).alerts == []
    back = c.on_status("v1", {"state": "online", "source": "device", "ts": 2}, NOW + 20)
    assert [(a.state, a.reason) for a in back.alerts] == [("resolved", "activity")]


def test_a_removed_fence_resolves_its_alert_and_forgets_membership() -> None:
    c = core({"restricted": {"when": "enter tag:restricted"}})
    c.on_telemetry("v1", fix(NOW, 2.305), NOW)
    out = c.set_fences([], NOW + 1)
    assert [(a.state, a.reason) for a in out.alerts] == [("resolved", "geofence_removed")]
    assert c.tracker.inside("v1") == []


def test_a_batch_looked_up_at_once_gives_what_one_by_one_gives() -> None:
    import random

    rng = random.Random(5)
    docs = []
    for i in range(400):
        vehicle = f"v{i % 7}"
        doc: Any = fix(NOW + i, rng.uniform(2.28, 2.33), speed=rng.uniform(0, 200))
        doc["lat"] = rng.uniform(48.795, 48.815)
        docs.append((vehicle, doc if i % 50 else {"broken": True}))
    alerts = {"fast": {"when": "speed > 150 for 2s", "clear": "speed < 100"},
              "restricted": {"when": "enter tag:restricted"}}
    one, many = core(alerts), core(alerts)
    expected = [one.on_telemetry(v, d, NOW + 500) for v, d in docs]
    located = many.locate([d for _, d in docs])
    got = [many.on_telemetry(v, d, NOW + 500, located=where) for (v, d), where in zip(docs, located, strict=True)]
    assert got == expected
    assert sum(len(o.events) for o in got) > 10


def test_default_min_times_come_from_the_geofences_section() -> None:
    c = core(min_inside_s=5)
    assert c.on_telemetry("v1", fix(NOW, 2.305), NOW).events == []
    assert c.on_telemetry("v1", fix(NOW + 6, 2.305), NOW + 6).events[0].ts == int(NOW * 1000)


# -- the rendered processor ------------------------------------------------------------


def processor_files(tmp_path: Path, target: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config = write_project(tmp_path, extra=extra)
    (tmp_path / "config" / "geofences.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [zone("red", ["restricted"])]}))
    stack = Stack.load(config, env={})
    spec = next(s for s in stack.plan(target) if s.name == "processor")  # type: ignore[arg-type]
    return {"spec": spec, "files": {f.relpath: f for f in spec.files}}


def test_locally_the_processor_watches_the_project_file(tmp_path: Path) -> None:
    got = processor_files(tmp_path, "local", {"alerts": {"fast": {"when": "speed > 130 for 10s"}},
                                              "geofences": {"min_outside_s": 30}})
    config = json.loads(got["files"]["processor.json"].content)
    assert config["geofences"] == {"path": str((tmp_path / "config" / "geofences.geojson").resolve()),
                                   "min_inside_s": 0.0, "min_outside_s": 30.0, "reload_interval": 1.0}
    assert config["alerts"]["fast"]["when"] == "speed > 130 for 10s"
    spec = got["spec"]
    assert (spec.reload_signal, spec.reloadable) == ("SIGHUP", ("geofences.geojson",))


def test_in_docker_the_processor_gets_a_reloadable_copy(tmp_path: Path) -> None:
    got = processor_files(tmp_path, "docker")
    copy = got["files"]["geofences.geojson"]
    assert copy.container_path == "/ecokit/config/processor/geofences.geojson"
    assert [f["id"] for f in json.loads(copy.content)["features"]] == ["red"]
    config = json.loads(got["files"]["processor.json"].content)
    assert config["geofences"]["path"] == copy.container_path
    # A new polygon changes only the reloadable file: a reload, not a restart.
    before = got["spec"]
    (tmp_path / "config" / "geofences.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        zone("red", ["restricted"]), zone("blue", [], 2.4)]}))
    after = next(s for s in Stack.load(tmp_path / "ecokit.yaml", env={}).plan("docker") if s.name == "processor")
    assert after.fingerprint() == before.fingerprint()
    assert after.content_fingerprint() != before.content_fingerprint()


# -- the service's message path (no broker: nothing is sent before connect) -------------


def service(tmp_path: Path, alerts: dict[str, Any] | None = None) -> Any:
    import logging

    from ecokit.contract import HttpListen, MqttSettings
    from ecokit.processor.contract import GeofenceWatch, ProcessorServiceConfig
    from ecokit.processor.service import Processor

    fences = tmp_path / "geofences.geojson"
    fences.write_text(json.dumps({"type": "FeatureCollection", "features": [zone("red", ["restricted"])]}))
    config = ProcessorServiceConfig(
        mqtt=MqttSettings(host="127.0.0.1", port=1, username="ecokit-processor", password="x"),
        http=HttpListen(host="127.0.0.1", port=0), geofences=GeofenceWatch(path=str(fences)),
        alerts={n: AlertRule.model_validate(r) for n, r in (alerts or {}).items()})
    return Processor(config, log=logging.getLogger("test"))


def test_a_message_whose_handling_raises_is_dead_lettered_and_the_next_one_is_handled(
        tmp_path: Path, monkeypatch: Any) -> None:
    processor = service(tmp_path)
    real = processor.core.on_telemetry

    def explode(vehicle: str, doc: Any, now: float, **kwargs: Any) -> Any:
        if vehicle == "bad":
            raise ZeroDivisionError("a bug")
        return real(vehicle, doc, now, **kwargs)

    monkeypatch.setattr(processor.core, "on_telemetry", explode)
    now_s = int(time.time())
    acks = processor._handle_batch([
        ("fleet/bad/telemetry", json.dumps(fix(now_s, 2.305)).encode(), 1, False, 7),
        ("fleet/v1/telemetry", json.dumps(fix(now_s, 2.305)).encode(), 1, False, 8),
        ("fleet/v1/status", b"not json", 1, False, 9),
    ])
    assert acks == [7, 8, 9]  # every message is acknowledged, the failed one once dead-lettered
    sent = bytes(processor.mqtt._out)
    assert b"ecokit/deadletter/processor" in sent
    assert b'"reason":"error","field":"ZeroDivisionError"' in sent
    assert b"fleet/v1/events" in sent  # the next message entered the zone
    metrics = processor.registry.get_sample_value
    assert metrics("ecokit_processor_messages_failed_total", {"reason": "ZeroDivisionError"}) == 1
    assert metrics("ecokit_processor_messages_received_total", {"kind": "telemetry"}) == 2
    assert metrics("ecokit_processor_messages_ignored_total") == 1
    assert metrics("ecokit_processor_fixes_evaluated_total") == 1


def test_hostile_payloads_are_ignored_not_fatal(tmp_path: Path) -> None:
    processor = service(tmp_path, {"fast": {"when": "speed > 100"}})
    deep = b"[" * 100_000 + b"]" * 100_000
    now_ms = int(time.time() * 1000)
    payloads = [deep, b'{"ts": 1e999, "lat": 1, "lng": 2}', b'{"ts": NaN}',
                json.dumps({"ts": now_ms, "lat": 48.8, "lng": 2.3, "speed": 10**400}).encode(),
                json.dumps({"ts": 10**400, "lat": 48.8, "lng": 2.3}).encode(),
                json.dumps({"ts": now_ms, "lat": 10**400, "lng": 2.3}).encode()]
    acks = processor._handle_batch([(f"fleet/v{i}/telemetry", p, 1, False, i + 1) for i, p in enumerate(payloads)])
    assert acks == list(range(1, len(payloads) + 1))
    assert processor.registry.get_sample_value("ecokit_processor_messages_failed_total",
                                               {"reason": "OverflowError"}) is None
    assert b"ecokit/deadletter/processor" not in bytes(processor.mqtt._out)
