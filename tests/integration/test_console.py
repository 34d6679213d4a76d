"""The fleet console's API and stream against a real stack started by `ecokit up` (mosquitto,
influxd, bridge, processor, shadow service, console): auth, state, filters, history, stream,
the command lifecycle with real devices (the simulator and paho devices), bad input, restart."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
import websockets
from paho.mqtt.enums import CallbackAPIVersion
from websockets.typing import Origin

from ecokit.cli import main
from ecokit.clients import stack_connection
from ecokit.config.regions import REGIONS
from ecokit.console.client import ConsoleEndpoint
from ecokit.sim.fleet import FleetSpec, build_fleet
from ecokit.sim.runner import SimSettings, Simulator
from ecokit.stack import Stack
from ecokit.status import stack_status
from ecokit.testing import SyncClient, running_stack, wait_for, write_project

DEVICES = [f"vehicle-{n:04d}" for n in range(1, 11)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("console")
    config = write_project(folder, devices=DEVICES, extra={
        "bridge": {"flush_ms": 50},
        "processor": {"offline_after": 30, "status_interval": 1},
        "console": {"batch_interval_ms": 100, "stats_interval_ms": 300,
                    "history": {"max_points": 100, "max_points_limit": 1000}},
    })
    with running_stack(config) as running:
        yield running


class Api:
    def __init__(self, stack: Stack) -> None:
        endpoint = ConsoleEndpoint.for_stack(stack)
        assert endpoint is not None
        self.endpoint = endpoint
        self.url = endpoint.url
        self.auth = {"Authorization": f"Bearer {endpoint.token}"}

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.url + path, headers=self.auth, params=params, timeout=10)

    def ok(self, path: str, **params: Any) -> Any:
        resp = self.get(path, **params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(self.url + path, headers=self.auth, json=body, timeout=10)

    def command(self, vehicle: str, name: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        resp = self.post("/api/commands", {"vehicle": vehicle, "command": name, "args": args or {}, **extra})
        assert resp.status_code == 202, resp.text
        items: list[dict[str, Any]] = resp.json()["items"]
        return items[0]

    def wait_command(self, command_id: str, states: set[str], timeout: float = 15.0) -> dict[str, Any]:
        command: dict[str, Any] = wait_for(
            f"command in {states}", lambda: (c := self.ok(f"/api/commands/{command_id}"))["state"] in states and c,
            timeout)
        return command


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    return Api(stack)


def fix(vehicle: str, ts: int | None = None, **over: Any) -> bytes:
    doc: dict[str, Any] = {"v": 1, "vehicle": vehicle, "seq": 1, "ts": ts or int(time.time() * 1000),
                           "lat": 48.85, "lng": 2.35, "speed": 30.0, "heading": 90.0, "fuel": 50.0,
                           "odometer": 10.0, "engine": True, "status": "moving"}
    doc.update(over)
    return json.dumps(doc).encode()


def device(stack: Stack, vehicle: str) -> SyncClient:
    user, password = stack.device_credentials(vehicle)
    client = SyncClient("127.0.0.1", stack.config.broker.ports.mqtt, username=user, password=password)
    reason, _, _ = client.connect()
    assert not reason.is_failure
    return client


class PahoDevice:
    """A device on paho that answers its commands with ``result`` (or stays silent)."""

    def __init__(self, stack: Stack, vehicle: str, result: str | None = "ok") -> None:
        self.vehicle = vehicle
        self.result = result
        self.received: list[dict[str, Any]] = []
        self.expiries: list[int | None] = []
        self.subscribed = threading.Event()
        user, password = stack.device_credentials(vehicle)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{vehicle}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(f"fleet/{vehicle}/commands", qos=1)
        self.client.on_subscribe = lambda c, u, mid, r, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", stack.config.broker.ports.mqtt)
        self.client.loop_start()
        assert self.subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        command = json.loads(msg.payload)
        self.received.append(command)
        self.expiries.append(getattr(msg.properties, "MessageExpiryInterval", None))
        if self.result is not None:
            ack = {"id": command["id"], "vehicle": self.vehicle, "result": self.result,
                   "detail": "done" if self.result == "ok" else "cannot do that now", "latency_ms": 0.5,
                   "ts": int(time.time() * 1000)}
            client.publish(f"fleet/{self.vehicle}/commands/ack", json.dumps(ack), qos=1)

    def telemetry(self) -> None:
        self.client.publish(f"fleet/{self.vehicle}/telemetry", fix(self.vehicle), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- auth -------------------------------------------------------------------------------------


def test_the_api_needs_the_token_and_the_probes_do_not(stack: Stack, api: Api) -> None:
    resp = requests.get(api.url + "/api/vehicles", timeout=5)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    wrong = requests.get(api.url + "/api/vehicles", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(api.url + probe, timeout=5).status_code == 200, probe
    page = requests.get(api.url + "/", timeout=5)
    assert page.status_code == 401
    assert "token" in page.text
    assert "vehicle-" not in page.text
    assert requests.get(api.url + "/?token=wrong", timeout=5, allow_redirects=False).status_code == 401

    browser = requests.Session()
    login = browser.get(api.endpoint.page, allow_redirects=False, timeout=5)
    assert login.status_code == 303
    assert login.headers["location"] == "/"
    cookie = login.headers["set-cookie"]
    assert "ecokit_console=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert api.endpoint.token not in cookie
    listed = browser.get(api.url + "/api/vehicles", timeout=5)
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    index = browser.get(api.url + "/", timeout=5)
    assert index.status_code == 200
    csp = index.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "img-src 'self' data: https://tile.openstreetmap.org" in csp
    assert "script-src 'self'" in csp
    assert index.headers["x-content-type-options"] == "nosniff"

    async def stream_without_token() -> int:
        async with websockets.connect(api.url.replace("http://", "ws://") + "/stream") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

    assert asyncio.run(stream_without_token()) == 4401

    async def stream_from_another_site() -> int:
        async with websockets.connect(api.url.replace("http://", "ws://") + "/stream", origin=Origin("http://evil.example"),
                                      additional_headers=api.auth) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

    assert asyncio.run(stream_from_another_site()) == 4403
    log = (stack.paths.logs_dir / "console.log").read_text()
    assert api.endpoint.token not in log, "the token must never reach the logs"
    assert '"path": "/"' in log


def test_openapi_and_the_docs_page_come_from_the_console_itself(api: Api) -> None:
    spec = requests.get(api.url + "/openapi.json", timeout=5).json()
    for path in ("/api/vehicles", "/api/vehicles/{vehicle_id}/history", "/api/commands", "/api/stats",
                 "/api/shadows/{thing}", "/api/devices", "/api/command-types", "/api/config"):
        assert path in spec["paths"], path
    docs = requests.get(api.url + "/docs", timeout=5)
    assert docs.status_code == 200
    assert "http" not in docs.text.replace("http-equiv", ""), "every asset comes from the console"
    for asset in ("/apidocs/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js", "/apidocs/init.js"):
        assert requests.get(api.url + asset, timeout=5).status_code == 200, asset


# -- state and stream ---------------------------------------------------------------------------


def test_vehicles_with_filters_paging_and_the_processors_fields(stack: Stack, api: Api) -> None:
    now = int(time.time() * 1000)
    fleet = {"vehicle-0001": {"lat": 48.85, "lng": 2.35, "fuel": 80.0, "status": "moving", "speed": 50.0},
             "vehicle-0002": {"lat": 48.86, "lng": 2.30, "fuel": 10.0, "status": "idle", "speed": 0.0},
             "vehicle-0003": {"lat": 25.20, "lng": 55.30, "fuel": 60.0, "status": "parked", "speed": 0.0}}
    clients = {v: device(stack, v) for v in fleet}
    try:
        for v, fields in fleet.items():
            clients[v].publish(f"fleet/{v}/telemetry", fix(v, now - 1000, **fields), qos=1)
        # Two more fixes of vehicle-0001, each 11 m further north a second later: ~40 km/h, which
        # the processor reports with its next periodic status (status_interval: 1).
        for n, lat in ((1, 48.8501), (2, 48.8502)):
            time.sleep(1.1)
            clients["vehicle-0001"].publish("fleet/vehicle-0001/telemetry", fix(
                "vehicle-0001", now - 1000 + n * 1000, **{**fleet["vehicle-0001"], "lat": lat}), qos=1)
        wait_for("three vehicles", lambda: len([v for v in api.ok("/api/vehicles", q="vehicle-000")["items"]
                                                if v["id"] in fleet]) == 3)
        moving_ids = [v["id"] for v in api.ok("/api/vehicles", status="moving", q="vehicle-000")["items"]]
        assert moving_ids == ["vehicle-0001"]
        assert [v["id"] for v in api.ok("/api/vehicles", status="idle,parked")["items"]] == \
            ["vehicle-0002", "vehicle-0003"]
        assert [v["id"] for v in api.ok("/api/vehicles", min_fuel=50, q="vehicle-000")["items"]] == \
            ["vehicle-0001", "vehicle-0003"]
        assert [v["id"] for v in api.ok("/api/vehicles", bbox="2.0,48.0,3.0,49.0")["items"]] == \
            ["vehicle-0001", "vehicle-0002"]
        page = api.ok("/api/vehicles", q="vehicle-000", limit=1, offset=1)
        assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
        assert [v["id"] for v in page["items"]] == ["vehicle-0002"]
        one = api.ok("/api/vehicles/vehicle-0003")
        assert (one["lat"], one["lng"], one["status"], one["online"], one["fuel"]) == \
            (25.2, 55.3, "parked", True, 60.0)
        moving = wait_for("the processor's derived speed",
                          lambda: (v := api.ok("/api/vehicles/vehicle-0001"))["derived_speed"] and v)
        assert 35 < moving["derived_speed"] < 45
        assert moving["last_seen"] == now + 1000
        missing = api.get("/api/vehicles/vehicle-0099")
        assert missing.status_code == 404
        assert missing.json()["error"]["field"] == "vehicle_id"
        devices = {d["id"]: d for d in api.ok("/api/devices")["items"]}
        assert sorted(devices) == DEVICES
        assert devices["vehicle-0001"]["known"] is True
        assert devices["vehicle-0010"] == {"id": "vehicle-0010", "client_cert": False, "known": False, "online": None}
        assert "password" not in json.dumps(devices)
    finally:
        for c in clients.values():
            c.disconnect()


def test_the_stream_sends_a_snapshot_then_diffs_stats_and_command_frames(stack: Stack, api: Api) -> None:
    d = PahoDevice(stack, "vehicle-0004")
    d.telemetry()
    wait_for("vehicle-0004", lambda: api.get("/api/vehicles/vehicle-0004").status_code == 200)

    async def watch() -> dict[str, list[dict[str, Any]]]:
        frames: dict[str, list[dict[str, Any]]] = {}
        async with websockets.connect(api.url.replace("http://", "ws://") + "/stream",
                                      additional_headers=api.auth) as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "snapshot"
            frames["snapshot"] = [first]
            moved = int(time.time() * 1000)
            d.client.publish("fleet/vehicle-0004/telemetry", fix("vehicle-0004", moved, lat=40.0, lng=-3.7), qos=1)
            await asyncio.to_thread(api.command, "vehicle-0004", "ping")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                frames.setdefault(frame["type"], []).append(frame)
                done = [f for f in frames.get("command", []) if f["command"]["state"] == "succeeded"]
                moved_seen = any(v["id"] == "vehicle-0004" and v["lat"] == 40.0
                                 for f in frames.get("diff", []) for v in f["vehicles"])
                if done and moved_seen and frames.get("stats"):
                    break
        return frames

    try:
        frames = asyncio.run(watch())
    finally:
        d.close()
    snapshot = {v["id"]: v for v in frames["snapshot"][0]["vehicles"]}
    assert set(snapshot["vehicle-0004"]) == {"id", "lat", "lng", "ts", "speed", "heading", "status", "fuel", "online"}
    diff = next(v for f in frames["diff"] for v in f["vehicles"] if v["id"] == "vehicle-0004" and v["lat"] == 40.0)
    assert (diff["lng"], diff["status"]) == (-3.7, "moving")
    assert all(f["removed"] == [] for f in frames["diff"])
    states = [f["command"]["state"] for f in frames["command"]]
    assert states[-1] == "succeeded"
    assert set(states) <= {"sent", "delivered", "succeeded"}
    stats = frames["stats"][-1]
    assert stats["vehicles"]["total"] >= 1
    assert stats["stream"]["clients"] == 1


def test_stats_count_messages_and_read_the_bridge(stack: Stack, api: Api) -> None:
    with device(stack, "vehicle-0005") as d:
        for n in range(20):
            d.publish("fleet/vehicle-0005/telemetry", fix("vehicle-0005", seq=n), qos=1)
        d.publish("fleet/vehicle-0005/telemetry", b"not json", qos=1)
        d.publish("fleet/vehicle-0005/telemetry", fix("vehicle-0005", lat=123.0), qos=1)
    stats = wait_for("the bridge's dead letters and rate", lambda: (s := api.ok("/api/stats"))["pipeline"]["bridge"]
                     ["rate"] is not None and s["pipeline"]["bridge"]["dead_letters"].get("out_of_range") and s)
    bridge = stats["pipeline"]["bridge"]
    assert bridge["up"] is True
    assert bridge["dead_letters"]["not_json"] >= 1
    assert stats["messages"]["total"] >= 22
    assert stats["messages"]["errors"]["not_json"] >= 1
    assert stats["messages"]["errors"]["out_of_range"] >= 1
    assert stats["latency_ms"]["samples"] >= 1
    metrics = requests.get(api.url + "/metrics", timeout=5).text
    assert 'ecokit_console_messages_rejected_total{reason="not_json"}' in metrics
    assert 'ecokit_console_http_requests_total{method="GET",route="/api/stats",status="200"}' in metrics


def test_history_comes_from_influxdb_downsampled(stack: Stack, api: Api) -> None:
    start = int(time.time() * 1000) - 600_000
    with device(stack, "vehicle-0006") as d:
        for n in range(300):
            d.publish("fleet/vehicle-0006/telemetry", fix("vehicle-0006", start + n * 1000, seq=n, speed=float(n % 50),
                                                          lat=48.0 + n / 1e4), qos=1)
    full = wait_for("300 points in InfluxDB", lambda: (h := api.ok("/api/vehicles/vehicle-0006/history",
                                                                   since="15m"))["count"] == 300 and h, 30)
    assert full["downsampled"] is True
    assert len(full["points"]) == 100  # console.history.max_points
    assert full["points"][0]["ts"] == start
    assert full["points"][-1]["ts"] == start + 299_000
    assert set(full["points"][0]) == {"ts", "lat", "lng", "speed", "fuel", "heading"}
    ten = api.ok("/api/vehicles/vehicle-0006/history", since=str(start), until=str(start + 9_000), max_points=50)
    assert (ten["count"], ten["downsampled"], len(ten["points"])) == (10, False, 10)
    assert [p["lat"] for p in ten["points"]] == [48.0 + n / 1e4 for n in range(10)]
    empty = api.ok("/api/vehicles/vehicle-0010/history", since="1h")  # registered, never drove
    assert (empty["count"], empty["points"]) == (0, [])
    for params, field in (({"since": "yesterday"}, "since"), ({"max_points": 5000}, "max_points"),
                          ({"since": "1m", "until": "2h"}, "since"), ({"max_points": 1}, "max_points")):
        resp = api.get("/api/vehicles/vehicle-0006/history", **params)
        assert resp.status_code == 400, params
        assert resp.json()["error"]["field"] == field, params
    assert api.get("/api/vehicles/vehicle-0099/history").status_code == 404


# -- commands ---------------------------------------------------------------------------------


def test_a_command_to_a_simulated_vehicle_succeeds_and_the_cli_shows_the_same_id(
        stack: Stack, api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = stack_connection(stack)
    fleet = build_fleet(FleetSpec(["vehicle-0007"], REGIONS["paris"], 7, interval=0.5))
    sim = Simulator(fleet, conn.target, conn.auth, SimSettings(qos=1, duration=15.0, queue_path=tmp_path / "q.db"))
    thread = threading.Thread(target=lambda: asyncio.run(sim.run()), daemon=True)
    thread.start()
    try:
        wait_for("the simulated vehicle online", lambda: api.get("/api/vehicles/vehicle-0007").status_code == 200
                 and api.ok("/api/vehicles/vehicle-0007")["online"])
        sent = api.command("vehicle-0007", "set_interval", {"seconds": 1})
        done = api.wait_command(sent["id"], {"succeeded", "failed", "timed_out"})
        assert done["state"] == "succeeded"
        assert done["detail"] == "interval 0.5s -> 1s"
        assert [h["state"] for h in done["history"]] in (["queued", "sent", "delivered", "succeeded"],
                                                          ["queued", "sent", "succeeded"])
        assert done["latency_ms"] is not None
        assert done["round_trip_ms"] is not None
        assert main(["command", "send", "-c", str(stack.project_dir / "ecokit.yaml"), "vehicle-0007", "ping",
                     "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["acks"][0]["result"] == "ok"
        assert shown["acks"][0]["detail"].startswith("pong ")
        listed = api.ok(f"/api/commands/{shown['id']}")
        assert (listed["vehicle"], listed["command"], listed["state"]) == ("vehicle-0007", "ping", "succeeded")
    finally:
        sim.request_stop()
        thread.join(30)


def test_a_device_error_fails_the_command_and_silence_times_it_out(stack: Stack, api: Api) -> None:
    failing = PahoDevice(stack, "vehicle-0008", result="error")
    failing.telemetry()
    try:
        wait_for("vehicle-0008 online", lambda: api.get("/api/vehicles/vehicle-0008").status_code == 200)
        sent = api.command("vehicle-0008", "engine_stop")
        failed = api.wait_command(sent["id"], {"failed", "succeeded", "timed_out"})
        assert (failed["state"], failed["result"], failed["detail"]) == ("failed", "error", "cannot do that now")
        failing.result = None
        silent = api.command("vehicle-0008", "ping", timeout_s=1)
        timed_out = api.wait_command(silent["id"], {"timed_out", "succeeded", "failed"})
        assert timed_out["state"] == "timed_out"
        assert [h["state"] for h in timed_out["history"]][-1] == "timed_out"
        assert failing.received[-1]["id"] == silent["id"], "the id travels in the payload"
    finally:
        failing.close()


def test_an_offline_vehicle_gets_its_command_when_it_comes_online_or_never(stack: Stack, api: Api) -> None:
    with device(stack, "vehicle-0009") as d:
        d.publish("fleet/vehicle-0009/status", json.dumps({"v": 1, "vehicle": "vehicle-0009", "state": "offline",
                                                           "ts": int(time.time() * 1000), "source": "device"}),
                  qos=1, retain=True)
    wait_for("vehicle-0009 offline", lambda: api.get("/api/vehicles/vehicle-0009").status_code == 200
             and api.ok("/api/vehicles/vehicle-0009")["status"] == "offline")
    expiring = api.command("vehicle-0009", "ping", expires_s=1)
    waiting = api.command("vehicle-0009", "engine_start", expires_s=60)
    assert expiring["state"] == waiting["state"] == "queued"
    assert api.wait_command(expiring["id"], {"expired"})["history"][-1]["state"] == "expired"
    late = PahoDevice(stack, "vehicle-0009")
    try:
        late.telemetry()  # it comes online: the queued command goes out, with the same id
        done = api.wait_command(waiting["id"], {"succeeded"})
        assert [c["id"] for c in late.received] == [waiting["id"]], "an expired command is never sent"
        assert late.expiries[0] is not None
        assert 0 < late.expiries[0] <= 60, "the broker drops it when the command expires"
        assert [h["state"] for h in done["history"]][:2] == ["queued", "sent"]
    finally:
        late.close()


def test_bad_input_gets_a_4xx_naming_the_field_and_nothing_reaches_the_broker(stack: Stack, api: Api) -> None:
    user, password = stack.service_credentials("ecokit-admin")
    with SyncClient("127.0.0.1", stack.config.broker.ports.mqtt, username=user, password=password) as spy:
        spy.connect()
        spy.subscribe("fleet/+/commands", qos=1)
        cases: list[tuple[Any, int, str | None]] = [
            ({"vehicle": "vehicle-9999", "command": "ping"}, 422, "vehicle"),
            ({"vehicles": ["vehicle-0001", "nope/x"], "command": "ping"}, 400, "vehicles[1]"),
            ({"vehicle": "vehicle-0001", "command": "self_destruct"}, 422, "command"),
            ({"vehicle": "vehicle-0001", "command": "set_interval", "args": {"seconds": "fast"}}, 400, "args.seconds"),
            ({"vehicle": "vehicle-0001", "command": "set_interval", "args": {"seconds": 0.001}}, 400, "args.seconds"),
            ({"vehicle": "vehicle-0001", "command": "ping", "args": {"loud": True}}, 400, "args.loud"),
            ({"vehicle": "vehicle-0001", "all": True, "command": "ping"}, 400, "all"),
            ({"command": "ping"}, 400, "vehicle"),
            ({"vehicle": "vehicle-0001", "command": "ping", "timeout_s": 0}, 400, "timeout_s"),
            ({"vehicle": "vehicle-0001", "command": "ping", "colour": "red"}, 400, "colour"),
            ({"vehicle": 7, "command": "ping"}, 400, "vehicle"),
        ]
        for body, status, field in cases:
            resp = api.post("/api/commands", body)
            assert resp.status_code == status, (body, resp.text)
            err = resp.json()["error"]
            assert err["field"] == field, (body, err)
            assert err["message"]
        raw = requests.post(api.url + "/api/commands", data=b'{"vehicle": ', timeout=5,
                            headers={**api.auth, "Content-Type": "application/json"})
        assert raw.status_code == 400
        assert "malformed JSON" in raw.json()["error"]["message"]
        huge = requests.post(api.url + "/api/commands", data=b'{"vehicle": "' + b"x" * 70_000 + b'"}', timeout=5,
                             headers={**api.auth, "Content-Type": "application/json"})
        assert huge.status_code == 413
        assert huge.json()["error"]["code"] == "too_large"
        for path, params, field in (("/api/vehicles", {"limit": 0}, "limit"), ("/api/vehicles", {"bbox": "1,2,3"},
                                    "bbox"), ("/api/vehicles", {"status": "flying"}, "status"),
                                    ("/api/commands", {"state": "done"}, "state")):
            resp = api.get(path, **params)
            assert resp.status_code == 400
            assert resp.json()["error"]["field"] == field
        assert api.get("/api/nothing").json()["error"]["code"] == "not_found"
        assert spy.drain(1.0) == [], "a refused request must not publish anything"


def test_commands_survive_a_console_restart(stack: Stack, api: Api) -> None:
    waiting = api.command("vehicle-0010", "ping", expires_s=120)  # never seen: queued
    expiring = api.command("vehicle-0010", "engine_stop", expires_s=3)
    before = api.ok(f"/api/commands/{waiting['id']}")
    stack.restart(["console"])
    assert api.ok(f"/api/commands/{waiting['id']}") == before
    # The timer of the other one went on across the restart.
    expired = api.wait_command(expiring["id"], {"expired"}, timeout=15)
    assert [h["state"] for h in expired["history"]] == ["queued", "expired"]
    listed = [c["id"] for c in api.ok("/api/commands", vehicle="vehicle-0010")["items"]]
    assert listed[:2] == [expiring["id"], waiting["id"]]
    assert requests.get(api.url + "/healthz", timeout=5).text == "ok\n"


# -- shadows ------------------------------------------------------------------------------------


def test_shadows_are_read_and_their_desired_state_changed(api: Api) -> None:
    missing = api.get("/api/shadows/vehicle-0003", name="nothing-here")
    assert missing.status_code == 404
    resp = requests.patch(api.url + "/api/shadows/vehicle-0003", headers=api.auth, timeout=10,
                          json={"desired": {"publish_interval": 3}})
    assert resp.status_code == 200, resp.text
    version = resp.json()["version"]
    doc = api.ok("/api/shadows/vehicle-0003")
    assert doc["state"]["desired"] == {"publish_interval": 3}
    assert doc["state"]["delta"] == {"publish_interval": 3}
    assert "clientToken" not in doc
    stale = requests.patch(api.url + "/api/shadows/vehicle-0003", headers=api.auth, timeout=10,
                           json={"state": {"desired": {"publish_interval": 4}}, "version": version - 1})
    assert stale.status_code == 409
    refused = requests.patch(api.url + "/api/shadows/vehicle-0003", headers=api.auth, timeout=10,
                             json={"state": {"reported": {"publish_interval": 4}}})
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "state.reported"
    assert api.get("/api/shadows/a+b").status_code == 400


def test_a_new_device_reaches_the_running_console_without_a_restart(stack: Stack, api: Api) -> None:
    import yaml

    pid = next(s.pid for s in stack_status(stack).services if s.name == "console")
    devices_file = stack.devices_file
    registry = yaml.safe_load(devices_file.read_text())
    registry["devices"].append({"id": "truck-17"})
    devices_file.write_text(yaml.safe_dump(registry))
    fresh = Stack.load(stack.project_dir / "ecokit.yaml", env={})
    assert fresh.up()["console"] == "reloaded"
    wait_for("truck-17 in /api/devices", lambda: "truck-17" in {d["id"] for d in api.ok("/api/devices")["items"]})
    assert next(s.pid for s in stack_status(fresh).services if s.name == "console") == pid
    assert api.post("/api/commands", {"vehicle": "truck-17", "command": "ping", "expires_s": 1}).status_code == 202
