"""Geofences, alerts and daily analytics end to end on the local runtime: real mosquitto,
real influxd (continuous queries), real prometheus, the simulator, the bridge and the
fleet processor started by `ecokit up`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from shapely import LineString, Point
from shapely.geometry import mapping

from ecokit.analytics import CQ_PREFIX
from ecokit.cli import main
from ecokit.clients import stack_connection
from ecokit.config.regions import REGIONS
from ecokit.console.client import ConsoleEndpoint
from ecokit.sim.fleet import FleetSpec, build_fleet
from ecokit.sim.runner import SimSettings, Simulator
from ecokit.stack import Stack
from ecokit.status import stack_status
from ecokit.store.influx import InfluxV1
from ecokit.testing import SyncClient, running_stack, wait_for, write_project

VEHICLES = ["veh-0001", "veh-0002", "veh-0003", "veh-0004", "veh-0005"]
DRIVER = "veh-0001"  # the simulated vehicle
INTERVAL = 0.1
FIXES = 80
ALERTS = {
    "overspeed": {"when": "speed > 130 for 2s", "clear": "speed < 120"},
    "silent": {"when": "offline for 3s", "severity": "critical"},
    "restricted": {"when": "enter tag:restricted", "severity": "critical"},
}


def simulated_positions(seed: int) -> list[tuple[float, float]]:
    """(lng, lat) of every fix the simulator will send, as it rounds them (the physics is
    deterministic: the first fix at dt 0, then one interval per fix)."""
    (vehicle,) = build_fleet(FleetSpec([DRIVER], REGIONS["paris"], seed, interval=INTERVAL))
    out = []
    for i in range(FIXES):
        fix = vehicle.step(0.0 if i == 0 else INTERVAL)
        out.append((round(fix.lng, 6), round(fix.lat, 6)))
    return out


def drive_zone() -> tuple[int, dict[str, Any], int, int]:
    """A seed and a corridor along the middle of its drive that the fixes enter once and
    leave once (checked with shapely on every fix); with the first fix inside and outside."""
    for seed in range(1, 100):
        points = simulated_positions(seed)
        corridor = LineString(points[30:55]).buffer(0.00003)
        inside = "".join("1" if corridor.contains(Point(p)) else "0" for p in points)
        first, last = inside.find("1"), inside.rfind("1")
        if first >= 10 and last <= FIXES - 10 and "0" not in inside[first:last + 1]:
            feature = {"type": "Feature", "id": "drive", "properties": {"name": "Drive corridor", "tags": ["route"]},
                       "geometry": json.loads(json.dumps(mapping(corridor)))}
            return seed, feature, first, last + 1
    raise AssertionError("no seed drives through a corridor")


SEED, DRIVE_ZONE, ENTER_FIX, EXIT_FIX = drive_zone()


def square(fid: str, lng: float, lat: float, size: float = 0.01, **props: Any) -> dict[str, Any]:
    ring = [[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]
    return {"type": "Feature", "id": fid, "properties": {"name": fid} | props,
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


def write_geofences(path: Path, *features: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for binary in ("mosquitto", "influxd", "prometheus"):
        if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists() \
                and not Path(f"/usr/bin/{binary}").exists():
            pytest.fail(f"integration tests need {binary} (infra/install.sh)", pytrace=False)
    folder = tmp_path_factory.mktemp("geofences")
    config = write_project(folder, devices=VEHICLES, extra={
        "bridge": {"flush_ms": 100, "batch_size": 500},
        "processor": {"offline_after": 60, "status_interval": 0},
        "geofences": {"reload_interval": 0.3},
        "alerts": ALERTS,
        "analytics": {"daily": {"every": "2s"}},
        "prometheus": {"enabled": True, "scrape_interval": "1s"},
    })
    write_geofences(folder / "config" / "geofences.geojson", DRIVE_ZONE)
    with running_stack(config) as running:
        yield running


def client(stack: Stack, user: str = "ecokit-admin") -> SyncClient:
    username, password = (stack.device_credentials(user) if user in VEHICLES
                          else stack.service_credentials(user))
    ports = stack.config.broker.ports  # ecokit's own users connect on the internal listener
    c = SyncClient("127.0.0.1", ports.mqtt if user in VEHICLES else ports.internal, username=username,
                   password=password)
    reason, _, _ = c.connect()
    assert not reason.is_failure, f"{user} could not connect: {reason}"
    return c


def metrics(stack: Stack) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{stack.config.service_ports.processor}/metrics", timeout=5).text
    return {name: float(value) for line in text.splitlines() if line and not line.startswith("#")
            for name, _, value in [line.rpartition(" ")]}


def rows(stack: Stack, q: str) -> list[dict[str, Any]]:
    with InfluxV1(stack.influx_endpoint("reader")) as r:
        return list(r.rows(q, epoch="ms"))


def processor_pid(stack: Stack) -> int | None:
    return next(s.pid for s in stack_status(stack).services if s.name == "processor")


def telemetry(vehicle: str, ts: int, lng: float, lat: float, **fields: Any) -> bytes:
    doc = {"v": 1, "vehicle": vehicle, "seq": 1, "ts": ts, "lat": lat, "lng": lng, "speed": 40.0, "heading": 90.0,
           "fuel": 50.0, "odometer": 1000.0, "engine": True, "status": "moving", **fields}
    return json.dumps(doc).encode()


# -- geofences -------------------------------------------------------------------------


def test_the_simulator_driving_through_a_zone_gives_enter_then_exit_on_mqtt_and_in_influxdb(
        stack: Stack, tmp_path: Path) -> None:
    points = simulated_positions(SEED)
    with client(stack) as watcher:
        watcher.subscribe(f"fleet/{DRIVER}/events", qos=1)
        conn = stack_connection(stack)
        fleet = build_fleet(FleetSpec([DRIVER], REGIONS["paris"], SEED, interval=INTERVAL))
        summary = asyncio.run(Simulator(fleet, conn.target, conn.auth, SimSettings(
            queue_path=tmp_path / "queue.sqlite", count=FIXES)).run())
        assert (summary.produced, summary.errors) == (FIXES, 0)
        enter, exit_ = (json.loads(m.payload) for m in watcher.expect(2, timeout=15))
        assert watcher.drain(1.0) == []
    assert (enter["type"], enter["geofence"], enter["name"], enter["tags"]) == (
        "geofence_enter", "drive", "Drive corridor", ["route"])
    assert (enter["lng"], enter["lat"]) == points[ENTER_FIX]  # the first fix inside
    assert (exit_["type"], exit_["geofence"]) == ("geofence_exit", "drive")
    assert (exit_["lng"], exit_["lat"]) == points[EXIT_FIX]  # the first fix outside again
    assert exit_["dwell_s"] == pytest.approx((exit_["ts"] - enter["ts"]) / 1000)
    # ~0.1 s between fixes on the simulator's schedule: the dwell matches the fixes inside.
    assert exit_["dwell_s"] == pytest.approx((EXIT_FIX - ENTER_FIX) * INTERVAL, abs=0.5)
    query = f"SELECT * FROM events WHERE vehicle = '{DRIVER}' ORDER BY time"
    stored = wait_for("both events in InfluxDB", lambda: r if len(r := rows(stack, query)) >= 2 else None)
    assert [(r["type"], r["geofence"], r["time"]) for r in stored] == [
        ("geofence_enter", "drive", enter["ts"]), ("geofence_exit", "drive", exit_["ts"])]
    assert stored[1]["dwell_s"] == exit_["dwell_s"]
    assert metrics(stack)['ecokit_processor_geofence_events_total{type="geofence_enter"}'] >= 1


def test_a_polygon_imported_while_running_takes_effect_without_a_restart(stack: Stack, tmp_path: Path) -> None:
    pid = processor_pid(stack)
    reloads = metrics(stack)['ecokit_processor_geofence_reloads_total{result="ok"}']
    red = write_geofences(tmp_path / "red.geojson", square("red", 2.40, 48.80, tags=["restricted"]))
    assert main(["geofences", "import", str(red), "-c", str(stack.loaded.path("ecokit.yaml"))]) == 0
    wait_for("the processor to reload", lambda: metrics(stack)["ecokit_processor_geofences"] == 2, timeout=10)
    assert metrics(stack)['ecokit_processor_geofence_reloads_total{result="ok"}'] == reloads + 1
    now = int(time.time() * 1000)
    with client(stack) as watcher, client(stack, "veh-0002") as device:
        watcher.subscribe("fleet/veh-0002/events", qos=1)
        watcher.subscribe("fleet/veh-0002/alerts", qos=1)
        device.publish("fleet/veh-0002/telemetry", telemetry("veh-0002", now, 2.39, 48.805), qos=1)
        device.publish("fleet/veh-0002/telemetry", telemetry("veh-0002", now + 1000, 2.405, 48.805), qos=1)
        got = {m.topic: json.loads(m.payload) for m in watcher.expect(2, timeout=10)}
    assert (got["fleet/veh-0002/events"]["type"], got["fleet/veh-0002/events"]["geofence"]) == ("geofence_enter", "red")
    alert = got["fleet/veh-0002/alerts"]
    assert (alert["alert"], alert["state"], alert["severity"], alert["geofence"]) == (
        "restricted", "firing", "critical", "red")
    assert processor_pid(stack) == pid  # reloaded, not restarted


def test_an_invalid_hand_edit_keeps_the_last_valid_geofences(stack: Stack) -> None:
    path = stack.geofences_file
    valid = path.read_bytes()
    try:
        broken = json.loads(valid)
        broken["features"].append(dict(broken["features"][0]))  # a duplicate id
        path.write_text(json.dumps(broken))
        wait_for("the processor to notice",
                 lambda: metrics(stack)["ecokit_processor_geofence_file_valid"] == 0, timeout=10)
        in_force = metrics(stack)["ecokit_processor_geofences"]
        assert in_force >= 1
        assert metrics(stack)['ecokit_processor_geofence_reloads_total{result="invalid"}'] >= 1
        # The last valid fences still work.
        now = int(time.time() * 1000)
        with client(stack) as watcher, client(stack, "veh-0005") as device:
            watcher.subscribe("fleet/veh-0005/events", qos=1)
            device.publish("fleet/veh-0005/telemetry", telemetry("veh-0005", now, *simulated_positions(SEED)[40]),
                           qos=1)
            (event,) = watcher.expect(1, timeout=10)
        assert json.loads(event.payload)["geofence"] == "drive"
    finally:
        path.write_bytes(valid)
    wait_for("the file to be valid again",
             lambda: metrics(stack)["ecokit_processor_geofence_file_valid"] == 1, timeout=10)


def test_a_device_cannot_forge_events_or_alerts(stack: Stack) -> None:
    forged = b'{"type":"geofence_exit","geofence":"red","source":"processor"}'
    with client(stack) as watcher, client(stack, "veh-0003") as device:
        watcher.subscribe("fleet/+/events", qos=1)
        watcher.subscribe("fleet/+/alerts", qos=1)
        for topic in ("fleet/veh-0003/events", "fleet/veh-0003/alerts"):
            reason = device.publish(topic, forged, qos=1)
            assert reason is not None
            assert reason.value == 0x87, reason  # Not authorized
        assert [m for m in watcher.drain(1.0) if m.payload == forged] == []


# -- alerts ----------------------------------------------------------------------------


def test_an_alert_fires_and_resolves_once_on_mqtt_in_influxdb_and_in_metrics(stack: Stack) -> None:
    now = int(time.time() * 1000)
    speeds = [100, 140, 150, 145, 138, 129, 125, 140, 110, 100]  # device time, 1 s apart
    with client(stack) as watcher, client(stack, "veh-0004") as device:
        watcher.subscribe("fleet/veh-0004/alerts", qos=1)
        for i, speed in enumerate(speeds):
            device.publish("fleet/veh-0004/telemetry", telemetry("veh-0004", now + 1000 * i, 2.0, 48.0,
                                                                 speed=speed), qos=1)
        firing, resolved = (json.loads(m.payload) for m in watcher.expect(2, timeout=10))
        assert [m for m in watcher.drain(1.0) if json.loads(m.payload)["alert"] == "overspeed"] == []
    assert (firing["alert"], firing["state"], firing["ts"], firing["since"], firing["value"]) == (
        "overspeed", "firing", now + 3000, now + 1000, 145)
    # 129 and 125 are inside the hysteresis band (clear below 120): still firing until 110.
    assert (resolved["state"], resolved["ts"], resolved["duration_s"], resolved["reason"]) == (
        "resolved", now + 8000, 5.0, "cleared")
    stored = wait_for("the alert in InfluxDB", lambda: (
        r if len(r := rows(stack, "SELECT * FROM alerts WHERE vehicle = 'veh-0004' AND alert = 'overspeed' "
                                  "ORDER BY time")) >= 2 else None), timeout=15)
    assert [(r["state"], r["time"], r["subject"]) for r in stored] == [
        ("firing", now + 3000, "speed"), ("resolved", now + 8000, "speed")]
    m = metrics(stack)
    assert m['ecokit_processor_alerts_total{alert="overspeed",state="firing"}'] == 1
    assert m['ecokit_processor_alerts_total{alert="overspeed",state="resolved"}'] == 1
    # The firing gauges follow within a second (the processor sets them once a second).
    wait_for("no overspeed firing",
             lambda: metrics(stack)['ecokit_processor_alerts_firing{alert="overspeed"}'] == 0, timeout=5)


def test_a_silent_vehicle_fires_offline_and_resolves_when_it_speaks(stack: Stack) -> None:
    with client(stack) as watcher, client(stack, "veh-0003") as device:
        watcher.subscribe("fleet/veh-0003/alerts", qos=1)
        device.publish("fleet/veh-0003/telemetry", telemetry("veh-0003", int(time.time() * 1000), 2.0, 47.0), qos=1)
        started = time.monotonic()
        (firing,) = watcher.expect(1, timeout=10)
        assert time.monotonic() - started >= 2.5  # offline for 3s, on the processor's clock
        device.publish("fleet/veh-0003/telemetry", telemetry("veh-0003", int(time.time() * 1000), 2.0, 47.0), qos=1)
        (resolved,) = watcher.expect(1, timeout=10)
    assert (json.loads(firing.payload)["alert"], json.loads(firing.payload)["state"]) == ("silent", "firing")
    assert (json.loads(resolved.payload)["state"], json.loads(resolved.payload)["reason"]) == ("resolved", "activity")


# -- analytics and pipeline health ------------------------------------------------------


def test_continuous_queries_keep_todays_daily_rows_and_refresh_computes_history(
        stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    with InfluxV1(stack.influx_endpoint("admin")) as admin:
        cqs = {row["name"] for row in admin.rows("SHOW CONTINUOUS QUERIES", use_db=False)}
    assert {f"{CQ_PREFIX}stats", f"{CQ_PREFIX}distance", f"{CQ_PREFIX}moving"} <= cqs
    # Today: the continuous queries themselves (every 2s here) roll up what vehicles sent.
    today = dt.datetime.now(dt.UTC).date().isoformat()
    daily = wait_for("today's row of the simulated vehicle", lambda: [
        r for r in stack.daily_rows(dt.datetime.now(dt.UTC)) if r["vehicle"] == DRIVER and r["day"] == today
        and (r["fixes"] or 0) >= FIXES], timeout=20)
    assert daily[0]["distance_km"] > 0
    # Three days ago: history the CQs never look at, computed on demand.
    base = dt.datetime.combine(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3), dt.time(9), dt.UTC)
    t0 = int(base.timestamp())
    step_deg = (60 / 3600) / (111.195 * math.cos(math.radians(48.0)))  # 60 km/h for 1 s
    lines = [f"telemetry,vehicle=veh-0005 lat=48.0,lng={2.0 + i * step_deg},speed=60,odometer={500 + i / 60}"
             f" {(t0 + i) * 10**9}" for i in range(600)]
    parked = 2.0 + 599 * step_deg  # an hour later, where it stopped
    lines += [f"telemetry,vehicle=veh-0005 lat=48.0,lng={parked},speed=0,odometer={500 + 599 / 60}"
              f" {(t0 + 3600 + i) * 10**9}" for i in range(60)]
    with InfluxV1(stack.influx_endpoint("writer")) as writer:
        writer.write(lines)
    config = str(stack.loaded.path("ecokit.yaml"))
    assert main(["query", "--daily", "--refresh", "--since", "4d", "--vehicle", "veh-0005", "--json",
                 "-c", config]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["refreshed_rows"] > 0
    (row,) = [r for r in report["rows"] if r["day"] == base.date().isoformat()]
    assert row["distance_km"] == pytest.approx(599 / 60, rel=0.001)  # 599 steps of 1/60 km
    assert row["odometer_km"] == pytest.approx(599 / 60)
    assert (row["max_speed"], row["fixes"], row["moving_s"]) == (60, 660, 600)
    assert row["avg_speed"] == pytest.approx(60 * 600 / 660)
    assert main(["query", "--daily", "--since", "4d", "-c", config]) == 0
    table = capsys.readouterr().out
    assert "daily fleet analytics since" in table
    assert "0h10m" in table


def test_changed_analytics_reach_the_continuous_queries_on_the_next_up(stack: Stack) -> None:
    path = stack.loaded.path("ecokit.yaml")
    config = yaml.safe_load(path.read_text())
    config["analytics"]["daily"]["every"] = "3s"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    actions = Stack.load(path, env={}).up()
    assert actions["influxdb"] == "unchanged"  # no restart for a new schedule
    with InfluxV1(stack.influx_endpoint("admin")) as admin:
        queries = [row["query"] for row in admin.rows("SHOW CONTINUOUS QUERIES", use_db=False)
                   if row["name"].startswith(CQ_PREFIX)]
    assert len(queries) == 3
    assert all("RESAMPLE EVERY 3s FOR 2d" in q for q in queries)


def test_prometheus_loads_the_pipeline_alerting_rules(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.config.prometheus.port}/api/v1/rules"
    groups = wait_for("prometheus rules", lambda: requests.get(url, timeout=5).json()["data"]["groups"], timeout=30)
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"EcokitServiceDown", "EcokitBridgeDroppingPoints", "EcokitDeadLettersRising", "EcokitNoTelemetry",
            "EcokitGeofenceFileInvalid"} <= names
    assert all(rule["health"] != "err" for group in groups for rule in group["rules"])


# -- the console: /api/geofences and the event feed -------------------------------------------


class Console:
    def __init__(self, stack: Stack) -> None:
        endpoint = ConsoleEndpoint.for_stack(stack)
        assert endpoint is not None, "the stack has a console"
        self.url = endpoint.url
        self.auth = {"Authorization": f"Bearer {endpoint.token}"}

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        return requests.request(method, self.url + path, headers=self.auth, json=body, params=params, timeout=10)


def test_the_console_edits_the_geofence_file_and_the_processor_follows(stack: Stack) -> None:
    console = Console(stack)
    assert requests.get(console.url + "/api/geofences", timeout=5).status_code == 401
    listed = console.call("GET", "/api/geofences").json()
    assert listed["type"] == "FeatureCollection"
    assert listed["writable"] is True
    before = len(listed["features"])
    zone = square("ignored", 2.60, 48.60, name="Console yard", tags=["restricted"])
    del zone["id"]
    created = console.call("POST", "/api/geofences", zone)
    assert created.status_code == 201, created.text
    fence_id = created.json()["id"]
    assert fence_id.startswith("console-yard-")
    on_disk = json.loads(stack.geofences_file.read_text())
    assert fence_id in [f["id"] for f in on_disk["features"]]  # the same file `ecokit geofences` edits
    wait_for("the processor to load it",
             lambda: metrics(stack)["ecokit_processor_geofences"] == before + 1, timeout=10)
    now = int(time.time() * 1000)
    with client(stack, "veh-0002") as device:
        device.publish("fleet/veh-0002/telemetry", telemetry("veh-0002", now + 60_000, 2.59, 48.605), qos=1)
        device.publish("fleet/veh-0002/telemetry", telemetry("veh-0002", now + 61_000, 2.605, 48.605), qos=1)
    feed = wait_for("the enter in the console's event feed", lambda: [
        e for e in console.call("GET", "/api/events", vehicle="veh-0002").json()["items"]
        if e.get("geofence") == fence_id], timeout=10)
    kinds = {(e["kind"], e.get("type") or e.get("state")) for e in feed}
    assert kinds == {("geofence", "geofence_enter"), ("alert", "firing")}
    enter = next(e for e in feed if e["kind"] == "geofence")
    assert (enter["vehicle"], enter["name"], enter["ts"]) == ("veh-0002", "Console yard", now + 61_000)

    renamed = console.call("PATCH", f"/api/geofences/{fence_id}", {"name": "Console yard (east gate)"})
    assert renamed.json()["properties"]["name"] == "Console yard (east gate)"
    moved = square(fence_id, 2.61, 48.60, name="Console yard (east gate)", tags=["restricted"])
    assert console.call("PUT", f"/api/geofences/{fence_id}", moved).status_code == 200
    assert console.call("GET", f"/api/geofences/{fence_id}").json()["geometry"] == moved["geometry"]
    assert console.call("DELETE", f"/api/geofences/{fence_id}").status_code == 204
    assert console.call("GET", f"/api/geofences/{fence_id}").status_code == 404
    wait_for("the processor to drop it", lambda: metrics(stack)["ecokit_processor_geofences"] == before, timeout=10)


def test_the_console_refuses_a_bad_geofence_naming_what_is_wrong(stack: Stack) -> None:
    console = Console(stack)
    before = stack.geofences_file.read_bytes()
    unclosed = square("bad", 2.7, 48.7)
    unclosed["geometry"]["coordinates"][0].pop()
    answer = console.call("POST", "/api/geofences", unclosed)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_geofence"
    assert "ring 0 (outer) is not closed" in error["message"]
    swapped = square("swap", 2.7, 48.7)
    swapped["geometry"]["coordinates"] = [[[48.7, 120.0], [48.8, 120.0], [48.8, 121.0], [48.7, 120.0]]]
    assert "GeoJSON is [longitude, latitude]" in console.call("POST", "/api/geofences", swapped).json()["error"][
        "message"]
    taken = json.loads(before)["features"][0]["id"]
    assert console.call("POST", "/api/geofences", square(taken, 2.7, 48.7)).status_code == 409
    assert console.call("PUT", "/api/geofences/nope", square("nope", 2.7, 48.7)).status_code == 404
    assert console.call("PATCH", f"/api/geofences/{taken}", {"geometry": None}).json()["error"]["field"] == \
        "geometry"
    assert stack.geofences_file.read_bytes() == before  # nothing invalid was written
