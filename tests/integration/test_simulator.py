"""The fleet simulator against a real Mosquitto started through ecokit."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecokit.cli import main
from ecokit.clients import fleet_ids, stack_connection
from ecokit.config.regions import REGIONS
from ecokit.config.registry import load_devices
from ecokit.runtime import process
from ecokit.sim.base import SimSettings
from ecokit.sim.commands import Command, new_command
from ecokit.sim.control import send_command
from ecokit.sim.fleet import FleetSpec, build_fleet
from ecokit.sim.runner import Simulator
from ecokit.sim.stats import Summary
from ecokit.stack import Stack
from ecokit.testing import Received, SyncClient, running_stack, wait_for

pytestmark = pytest.mark.usefixtures("server_binaries")

ProjectFactory = Callable[..., Path]


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    # Sockets a test forgot to close surface in that test, not in a later one.
    yield
    import gc

    gc.collect()


def admin_client(stack: Stack, *, client_id: str | None = None, clean_start: bool = True,
                 session_expiry: int | None = None) -> SyncClient:
    target = stack_connection(stack, as_admin=True).target
    user, password = stack.service_credentials("ecokit-admin")
    return SyncClient(target.host, target.port, username=user, password=password, client_id=client_id,
                      clean_start=clean_start, session_expiry=session_expiry)


def run_sim(stack: Stack, tmp_path: Path, *, vehicles: int, seed: int = 42, interval: float = 0.1,
            jitter: float = 0.0, **settings: Any) -> Summary:
    conn = stack_connection(stack)
    fleet = build_fleet(FleetSpec(fleet_ids(stack, vehicles), REGIONS["paris"], seed, interval=interval,
                                  jitter=jitter))
    queue = tmp_path / f"queue-{uuid.uuid4().hex[:6]}.sqlite"
    sim = Simulator(fleet, conn.target, conn.auth, SimSettings(queue_path=queue, **settings))
    return asyncio.run(sim.run())


class Background:
    """A simulation running in a thread (its own event loop), joined at the end."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.summary = asyncio.run(self.sim.run())
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def join(self, timeout: float = 60) -> Summary:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.summary is not None, "the simulation did not finish"
        return self.summary

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.sim.request_stop()
            self.thread.join(30)


def telemetry_by_vehicle(messages: list[Received]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        if m.topic.endswith("/telemetry"):
            data = json.loads(m.payload)
            out[data["vehicle"]].append(data)
    return out


@pytest.fixture
def stack5(make_project: ProjectFactory) -> Iterator[Stack]:
    with running_stack(make_project(devices=5)) as stack:
        yield stack


def test_same_seed_same_messages_through_the_broker(stack5: Stack, tmp_path: Path) -> None:
    runs = []
    for seed in (42, 42, 43):
        with admin_client(stack5) as sub:
            sub.connect()
            sub.subscribe("fleet/+/telemetry", qos=1)
            summary = run_sim(stack5, tmp_path, vehicles=3, seed=seed, interval=0.05, jitter=0.02, count=25)
            assert summary.produced == 75
            got = telemetry_by_vehicle(sub.expect(75, timeout=10) + sub.drain(0.3))
        runs.append({vid: [{k: v for k, v in m.items() if k != "ts"} for m in sorted(ms, key=lambda m: m["seq"])]
                     for vid, ms in got.items()})
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert [m["seq"] for m in runs[0]["vehicle-0001"]] == list(range(1, 26))
    # What went over the wire is what the pure model produces for the same schedule.
    offline = build_fleet(FleetSpec(["vehicle-0001"], REGIONS["paris"], 42, interval=0.05, jitter=0.02))[0]
    expected = []
    for i in range(25):
        fix = offline.step(0.0 if i == 0 else offline.next_delay())
        expected.append({k: v for k, v in json.loads(offline.telemetry(fix, 0)).items() if k != "ts"})
    assert runs[0]["vehicle-0001"] == expected


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_count_is_exact_through_the_cli(stack5: Stack, tmp_path: Path, protocol: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = stack5.project_dir / "ecokit.yaml"
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        code = main(["simulate", "-c", str(config), "--vehicles", "4", "--rate", "50ms", "--count", "7",
                     "--mqtt", protocol, "--quiet", "--json", "--queue", str(tmp_path / "q.sqlite")])
        assert code == 0, capsys.readouterr()
        got = telemetry_by_vehicle(sub.expect(28, timeout=10) + sub.drain(0.5))
    assert sorted(got) == [f"vehicle-000{i}" for i in range(1, 5)]
    for messages in got.values():
        assert sorted(m["seq"] for m in messages) == list(range(1, 8))
    summary = json.loads(capsys.readouterr().out)
    assert summary["produced"] == 28
    assert summary["errors"] == 0


def test_duration_is_exact(stack5: Stack, tmp_path: Path) -> None:
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        started = time.monotonic()
        summary = run_sim(stack5, tmp_path, vehicles=4, interval=0.25, duration=1.5, qos=1)
        took = time.monotonic() - started
        got = telemetry_by_vehicle(sub.expect(24, timeout=10) + sub.drain(0.5))
    # Fixes at 0, 0.25, ... 1.25 s (plus each vehicle's stagger below one interval): 6 each.
    assert {vid: len(ms) for vid, ms in got.items()} == {f"vehicle-000{i}": 6 for i in range(1, 5)}
    assert summary.publish_seconds == pytest.approx(1.5, abs=1e-6)
    assert 1.5 <= took < 6
    for messages in got.values():
        ts = sorted(m["ts"] for m in messages)
        assert ts[-1] - ts[0] == pytest.approx(1250, abs=120)


@pytest.mark.parametrize("client", ["fast", "paho"])
def test_broker_restart_during_a_qos1_run_loses_nothing(stack5: Stack, tmp_path: Path, client: str) -> None:
    from ecokit.runtime.local import LocalRuntime

    conn = stack_connection(stack5)
    fleet = build_fleet(FleetSpec(fleet_ids(stack5, 5), REGIONS["paris"], 7, interval=0.1))
    sim = Simulator(fleet, conn.target, conn.auth,
                    SimSettings(qos=1, duration=9.0, queue_path=tmp_path / "q.sqlite", backoff_min=0.2,
                                backoff_max=1.0, drain_timeout=20, client=client))
    runtime = stack5.runtime("local")
    assert isinstance(runtime, LocalRuntime)
    sub = admin_client(stack5, client_id=f"persistent-{uuid.uuid4().hex[:6]}", clean_start=False,
                       session_expiry=600)
    sub.client.reconnect_delay_set(0.2, 1)
    with sub:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        with Background(sim) as bg:
            wait_for("the fleet publishing, the broker acknowledging", lambda: sim.stats.acked >= 50, 30)
            entry = runtime._load()["services"]["broker"]  # the test stops the broker by pid
            assert process.stop(process.ProcessRef(int(entry["pid"]), int(entry["start_ticks"])))
            # Vehicles queue offline meanwhile: every one of them has something waiting.
            wait_for("each vehicle queueing offline",
                     lambda: sim.queue is not None and all(sim.queue.depth(v.id) >= 3 for v in fleet), 30)
            queued_while_down = sim.queue.size if sim.queue else 0
            stack5.up()  # the broker comes back on the same port with its persisted sessions
            summary = bg.join(60)
        deadline = time.monotonic() + 20
        messages = []
        while time.monotonic() < deadline:
            messages += sub.drain(0.5)
            got = telemetry_by_vehicle(messages)
            if all({m["seq"] for m in got.get(vid, [])} >= set(range(1, n + 1))
                   for vid, n in summary.per_vehicle.items()):
                break
    assert queued_while_down > 0
    assert summary.reconnects >= 5
    assert summary.flushed > 0
    assert summary.queued_left == 0
    assert summary.dropped == 0
    got = telemetry_by_vehicle(messages)
    for vid, n in summary.per_vehicle.items():
        assert n > 50
        seqs = [m["seq"] for m in got[vid]]
        assert set(seqs) == set(range(1, n + 1)), f"{vid}: missing {sorted(set(range(1, n + 1)) - set(seqs))[:20]}"
        # In order: re-sent in-flight messages, then the offline queue, then live ones.
        first_seen = list(dict.fromkeys(seqs))
        assert first_seen == sorted(first_seen), f"{vid}: out of order around the outage"


def test_queue_overflow_is_counted_never_silent(tmp_path: Path) -> None:
    from ecokit.mqtt.target import BrokerTarget, ClientAuth
    from ecokit.testing import free_port

    target = BrokerTarget("127.0.0.1", free_port())  # nothing listens there
    fleet = build_fleet(FleetSpec(["a", "b"], REGIONS["paris"], 1, interval=0.05))
    sim = Simulator(fleet, target, lambda vid: ClientAuth(), SimSettings(
        qos=1, count=10, queue_limit=4, drain_timeout=0.2, connect_timeout=5, queue_path=tmp_path / "q.sqlite"))
    summary = asyncio.run(sim.run())
    assert summary.ever_connected == 0
    assert summary.produced == 20
    assert summary.queued_left == 8
    assert summary.dropped == 12
    assert sum("offline queue full" in e for e in summary.last_errors) == 2
    assert summary.connect_failures >= 2


@pytest.mark.parametrize("client", ["fast", "paho"])
def test_commands_are_executed_and_acked(stack5: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         client: str) -> None:
    conn = stack_connection(stack5)
    internal = stack_connection(stack5, as_admin=True)  # ecokit-admin: the internal listener
    admin = internal.auth("ecokit-admin")
    fleet = build_fleet(FleetSpec(fleet_ids(stack5, 3), REGIONS["paris"], 1, interval=0.2))
    sim = Simulator(fleet, conn.target, conn.auth,
                    SimSettings(qos=1, duration=8.0, queue_path=tmp_path / "q.db", client=client))
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/vehicle-0001/telemetry", qos=1)
        with Background(sim) as bg:
            # Every vehicle connected, subscribed (its SUBSCRIBE went before its telemetry) and heard.
            wait_for("the fleet connected", lambda: sim.stats.connected == 3 and sim.stats.acked >= 6, 30)
            acks = send_command(internal.target, admin, new_command("set_interval", {"seconds": 0.5}, ts_ms=0),
                                "vehicle-0001", timeout=5)
            assert [(a.vehicle, a.result, a.detail) for a in acks] == [("vehicle-0001", "ok", "interval 0.2s -> 0.5s")]
            assert acks[0].latency_ms >= 0  # how fast: benchmarks/sim_timing.py
            changed = time.time() * 1000
            pings = send_command(internal.target, admin, new_command("ping", ts_ms=0), None, timeout=5, expect=3)
            assert sorted(a.vehicle for a in pings) == ["vehicle-0001", "vehicle-0002", "vehicle-0003"]
            assert all(a.result == "ok" and a.detail.startswith("pong ") for a in pings)
            bad = send_command(internal.target, admin, Command(str(uuid.uuid4()), "set_interval", {"seconds": -1}),
                               "vehicle-0002")
            assert bad[0].result == "error"
            assert "between" in bad[0].detail
            code = main(["command", "send", "-c", str(stack5.project_dir / "ecokit.yaml"), "vehicle-0003",
                         "engine_stop", "--json"])
            assert code == 0
            sent = json.loads(capsys.readouterr().out)
            assert (sent["name"], sent["vehicle"], sent["broadcast"]) == ("engine_stop", "vehicle-0003", False)
            assert sent["sent_at"].endswith("Z")
            assert [(a["vehicle"], a["ok"]) for a in sent["acks"]] == [("vehicle-0003", True)]
            summary = bg.join(30)  # the rest of the 8 s at the new interval
        got = telemetry_by_vehicle(sub.drain(0.5))["vehicle-0001"]
    after = sorted(m["ts"] for m in got if m["ts"] > changed + 600)
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert len(gaps) >= 3
    # The new interval holds (its accuracy is a figure of benchmarks/sim_timing.py).
    assert sum(gaps) / len(gaps) == pytest.approx(500, rel=0.25), gaps
    assert min(gaps) > 300, gaps  # never the old 200 ms
    assert summary.commands >= 6
    assert summary.errors == 0


def test_engine_stop_parks_the_vehicle(stack5: Stack, tmp_path: Path) -> None:
    conn = stack_connection(stack5)
    internal = stack_connection(stack5, as_admin=True)  # ecokit-admin: the internal listener
    admin = internal.auth("ecokit-admin")
    fleet = build_fleet(FleetSpec(fleet_ids(stack5, 1), REGIONS["dubai"], 3, interval=0.1))
    sim = Simulator(fleet, conn.target, conn.auth, SimSettings(qos=1, duration=5.0, queue_path=tmp_path / "q.db"))
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/vehicle-0001/telemetry", qos=1)
        with Background(sim) as bg:
            wait_for("the vehicle connected and heard", lambda: sim.stats.acked >= 2, 30)
            acks = send_command(internal.target, admin, new_command("engine_stop", ts_ms=0), "vehicle-0001")
            assert acks[0].result == "ok"
            bg.join(30)
        got = sorted(telemetry_by_vehicle(sub.drain(0.5))["vehicle-0001"], key=lambda m: m["seq"])
    assert got[-1]["status"] == "parked"
    assert got[-1]["engine"] is False
    assert got[-1]["speed"] == 0


@pytest.mark.parametrize("client", ["fast", "paho"])
def test_status_online_then_last_will_when_the_process_dies(stack5: Stack, tmp_path: Path, client: str) -> None:
    config = stack5.project_dir / "ecokit.yaml"
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/vehicle-0001/status", qos=1)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen([sys.executable, "-m", "ecokit", "simulate", "-c", str(config), "--vehicles", "1",
                                 "--duration", "60s", "--quiet", "--queue", str(tmp_path / "q.sqlite"),
                                 "--client", client],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def next_device_status(timeout: float) -> dict[str, object]:
            # The fleet processor publishes its own view on the same topic; skip it.
            deadline = time.monotonic() + timeout
            while True:
                doc = json.loads(sub.expect(1, timeout=max(0.1, deadline - time.monotonic()))[0].payload)
                if doc.get("source") == "device":
                    return dict(doc)

        try:
            online = next_device_status(20)
            assert online["state"] == "online"
            os.kill(proc.pid, signal.SIGKILL)
            will = next_device_status(10)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert will == {"v": 1, "vehicle": "vehicle-0001", "state": "offline", "ts": will["ts"], "source": "device"}
    with admin_client(stack5) as late:  # retained: a newcomer sees the vehicle is offline
        late.connect()
        late.subscribe("fleet/vehicle-0001/status", qos=1)
        assert json.loads(late.expect(1, timeout=5)[0].payload)["state"] == "offline"


def test_register_creates_missing_devices_and_reloads_the_broker(make_project: ProjectFactory,
                                                                 tmp_path: Path) -> None:
    config = make_project(devices=2)
    with running_stack(config) as stack, admin_client(stack) as sub:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        code = main(["simulate", "-c", str(config), "--vehicles", "4", "--register", "--rate", "100ms", "--count",
                     "3", "--quiet", "--queue", str(tmp_path / "q.sqlite")])
        assert code == 0
        got = telemetry_by_vehicle(sub.expect(12, timeout=10))
    assert len(load_devices(config.parent / "config" / "devices.yaml")) == 4
    assert len(got) == 4


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
def test_tls_and_mutual_tls_with_each_devices_certificate(make_project: ProjectFactory, tmp_path: Path,
                                                          mtls: bool) -> None:
    config = make_project(devices=2, extra={"tls": {"enabled": True, "mtls": mtls}})
    with running_stack(config) as stack:
        conn = stack_connection(stack)
        assert conn.target.tls
        assert conn.target.url.startswith("mqtts://")
        assert ("certificate" in conn.description) is mtls
        summary = run_sim(stack, tmp_path, vehicles=2, count=5, qos=1)
    assert summary.ever_connected == 2
    assert summary.produced == 10
    assert summary.acked >= 10
    assert summary.errors == 0


def test_unreachable_broker_is_reported_with_its_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ecokit.testing import free_port

    port = free_port()
    code = main(["simulate", "--broker", f"mqtt://127.0.0.1:{port}", "--vehicles", "2", "--count", "1",
                 "--quiet", "--drain", "0.5s", "--queue", str(tmp_path / "q.sqlite")])
    assert code == 1
    assert f"mqtt://127.0.0.1:{port}" in capsys.readouterr().err


def test_any_broker_url_with_credentials_in_it(stack5: Stack, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from urllib.parse import quote

    target = stack_connection(stack5, as_admin=True).target  # many vehicles as one user: the internal listener
    user, password = stack5.service_credentials("ecokit-admin")
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        code = main(["simulate", "--broker", f"mqtt://{user}:{quote(password, safe='')}@{target.host}:{target.port}",
                     "--vehicles", "2", "--count", "3", "--rate", "100ms", "--region", "48.80,2.30,48.83,2.36",
                     "--client-id-prefix", "bench-", "--quiet", "--queue", str(tmp_path / "q.sqlite")])
        assert code == 0, capsys.readouterr()
        got = telemetry_by_vehicle(sub.expect(6, timeout=10))
    assert {vid: len(ms) for vid, ms in got.items()} == {"vehicle-0001": 3, "vehicle-0002": 3}
    for messages in got.values():
        assert all(48.80 <= m["lat"] <= 48.83 and 2.30 <= m["lng"] <= 2.36 for m in messages)
    assert password not in capsys.readouterr().out


def test_reconnects_back_off_exponentially(tmp_path: Path) -> None:
    from ecokit.mqtt.target import BrokerTarget, ClientAuth
    from ecokit.testing import free_port

    target = BrokerTarget("127.0.0.1", free_port())  # refuses every connection
    fleet = build_fleet(FleetSpec(["a"], REGIONS["paris"], 1, interval=0.5))
    sim = Simulator(fleet, target, lambda vid: ClientAuth(), SimSettings(
        qos=1, duration=3.0, backoff_min=0.1, backoff_max=0.8, drain_timeout=0.1, connect_timeout=1,
        queue_path=tmp_path / "q.sqlite"))
    summary = asyncio.run(sim.run())
    # Delays 0.05-0.1, 0.1-0.2, 0.2-0.4, 0.4-0.8, then 0.4-0.8 each: 3 s hold 6 to 12 attempts.
    assert 5 <= summary.connect_failures <= 14
    assert summary.queued_left == 6


def test_as_admin_needs_no_registration(stack5: Stack, tmp_path: Path) -> None:
    config = stack5.project_dir / "ecokit.yaml"
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        code = main(["simulate", "-c", str(config), "--vehicles", "7", "--as-admin", "--count", "2", "--rate", "100ms",
                     "--quiet", "--queue", str(tmp_path / "q.sqlite")])
        assert code == 0
        got = telemetry_by_vehicle(sub.expect(14, timeout=10))
    assert sorted(got) == [f"vehicle-000{i}" for i in range(1, 8)]
    assert len(load_devices(stack5.devices_file)) == 5


def test_defaults_come_from_the_simulator_section_and_flags_win(make_project: ProjectFactory, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    dubai = REGIONS["dubai"]
    config = make_project(devices=2, extra={"simulator": {"region": "dubai", "rate": "100ms", "qos": 0}})
    with running_stack(config) as stack, admin_client(stack) as sub:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        assert main(["simulate", "-c", str(config), "--vehicles", "2", "--count", "3", "--quiet",
                     "--queue", str(tmp_path / "q.sqlite")]) == 0
        from_yaml = sub.expect(6, timeout=10)
        monkeypatch.setenv("ECOKIT_SIMULATOR__REGION", "paris")
        assert main(["simulate", "-c", str(config), "--vehicles", "2", "--count", "3", "--qos", "1", "--quiet",
                     "--queue", str(tmp_path / "q.sqlite")]) == 0
        from_env_and_flags = sub.expect(6, timeout=10)
    assert all(m.qos == 0 for m in from_yaml)
    assert all(dubai.contains(json.loads(m.payload)["lat"], json.loads(m.payload)["lng"]) for m in from_yaml)
    assert all(m.qos == 1 for m in from_env_and_flags)
    assert all(REGIONS["paris"].contains(json.loads(m.payload)["lat"], json.loads(m.payload)["lng"])
               for m in from_env_and_flags)


def test_an_interrupted_run_exits_130_and_its_summary_says_so(stack5: Stack, tmp_path: Path) -> None:
    config = stack5.project_dir / "ecokit.yaml"
    with admin_client(stack5) as sub:
        sub.connect()
        sub.subscribe("fleet/vehicle-0001/telemetry", qos=1)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen([sys.executable, "-m", "ecokit", "simulate", "-c", str(config), "--vehicles", "1",
                                 "--rate", "200ms", "--duration", "60s", "--json", "--drain", "2s", "--queue",
                                 str(tmp_path / "q.sqlite")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            sub.expect(2, timeout=30)  # running: telemetry arrives
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["stopped_by"] == "SIGINT"
    assert summary["produced"] >= 2
    assert "interrupted (SIGINT)" in err
