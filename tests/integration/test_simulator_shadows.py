"""Simulated vehicles and their device shadows, through a real stack (Mosquitto + shadow service)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecokit.cli import main
from ecokit.clients import fleet_ids, shadow_client, stack_connection
from ecokit.config.regions import REGIONS
from ecokit.sim.base import SimSettings
from ecokit.sim.fleet import FleetSpec, build_fleet
from ecokit.sim.runner import Simulator
from ecokit.sim.stats import Summary
from ecokit.stack import Stack
from ecokit.testing import Received, SyncClient, running_stack, wait_for

pytestmark = pytest.mark.usefixtures("server_binaries")

ProjectFactory = Callable[..., Path]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack2(make_project: ProjectFactory) -> Iterator[Stack]:
    with running_stack(make_project(devices=2)) as stack:
        yield stack


def admin_client(stack: Stack) -> SyncClient:
    target = stack_connection(stack).target
    user, password = stack.service_credentials("ecokit-admin")
    return SyncClient(target.host, target.port, username=user, password=password)


def telemetry_ts(messages: list[Received], vehicle: str) -> list[int]:
    docs = [json.loads(m.payload) for m in messages if m.topic == f"fleet/{vehicle}/telemetry"]
    return sorted(d["ts"] for d in {d["seq"]: d for d in docs}.values())


def gaps(ts: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(ts)]


def spacing(ts: list[int]) -> float:
    """Mean ms between fixes: the interval itself (the schedule does not drift, only single
    fixes are late by the load of the moment)."""
    return (ts[-1] - ts[0]) / (len(ts) - 1)


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_desired_publish_interval_reaches_a_running_vehicle_and_comes_back_reported(
        stack2: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(stack2.project_dir / "ecokit.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with admin_client(stack2) as sub, shadow_client(stack2).connect() as app:
        sub.connect()
        sub.subscribe("fleet/+/telemetry", qos=1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecokit", "simulate", "-c", config, "--vehicles", "2", "--rate", "1s",
             "--duration", "11s", "--quiet", "--json", "--queue", str(tmp_path / "q.sqlite")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Shadows are on by default against a stack: each vehicle reports on connect.
            first = wait_for("vehicle-0001's report on connect",
                             lambda: (r := app.get("vehicle-0001")).accepted and r.document, 20)
            reported = first["state"]["reported"]
            assert reported["publish_interval"] == 1
            assert set(reported) == {"engine", "publish_interval", "firmware", "kind", "region"}
            assert reported["region"] == "paris"
            # Three fixes at 1 s first (counted, not consumed: they are checked below).
            wait_for("three fixes of vehicle-0001 at the 1 s interval",
                     lambda: sum(m.topic == "fleet/vehicle-0001/telemetry" for m in list(sub.messages.queue)) >= 3, 20)
            asked_ms = time.time() * 1000
            code, _ = cli_json(capsys, "shadow", "update", "-c", config, "vehicle-0001",
                               "--desired", '{"publish_interval": 0.25}')
            assert code == 0

            def followed() -> dict[str, Any] | None:
                code, doc = cli_json(capsys, "shadow", "get", "-c", config, "vehicle-0001")
                assert code == 0
                return doc if doc["state"]["reported"]["publish_interval"] == 0.25 else None

            doc = wait_for("reported.publish_interval following desired", followed, 5)
            applied_ms = time.time() * 1000  # the vehicle reports after applying
            assert doc["state"]["desired"] == {"publish_interval": 0.25}
            assert "delta" not in doc["state"]
            # A set_interval command takes the same path, and the shadow's reported follows it
            # too; the desired value then stands out as the delta.
            assert main(["command", "send", "-c", config, "vehicle-0002", "set_interval", "seconds=2"]) == 0
            other = wait_for("the command's interval reported",
                             lambda: (d := app.get("vehicle-0002").document)["state"]["reported"]
                             ["publish_interval"] == 2 and d, 5)
            assert "desired" not in other["state"]
            out, errors = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, errors
        messages = sub.drain(1.0)
    summary = json.loads(out)
    assert summary["shadow"] is True
    assert summary["shadow_deltas"] == 1
    assert summary["shadow_rejected"] == 0
    assert summary["errors"] == 0, summary["last_errors"]
    assert summary["shadow_reports"] >= 4  # two on connect, one after the delta, one after the command
    fast = telemetry_ts(messages, "vehicle-0001")
    before = [t for t in fast if t < asked_ms]
    after = [t for t in fast if t > applied_ms]
    # Which interval holds, not how exactly: the schedule's accuracy is a figure of
    # benchmarks/sim_timing.py (a loaded machine delays single fixes, not the interval).
    assert len(before) >= 3
    assert spacing(before) == pytest.approx(1000, rel=0.25), gaps(before)
    assert len(after) >= 20
    assert spacing(after) == pytest.approx(250, rel=0.25), gaps(after)
    assert max(gaps(after)) < 1000, gaps(after)  # never the old interval once applied
    assert len(fast) >= 35  # about 3 at 1 s, then 4 a second for the rest of the 11 s
    slow = telemetry_ts(messages, "vehicle-0002")
    assert 6 <= len(slow) <= 12  # 1 s, then 2 s after the command: never the other vehicle's rate
    assert min(gaps(slow)) >= 700, gaps(slow)


def run_sim(stack: Stack, tmp_path: Path, **settings: Any) -> Summary:
    conn = stack_connection(stack)
    fleet = build_fleet(FleetSpec(fleet_ids(stack, 1), REGIONS["paris"], 5, interval=1.0))
    sim = Simulator(fleet, conn.target, conn.auth, SimSettings(queue_path=tmp_path / "q.sqlite", shadow=True,
                                                               **settings))
    return asyncio.run(sim.run())


def test_a_desired_change_made_while_the_simulator_is_stopped_is_applied_when_it_starts(
        stack2: Stack, tmp_path: Path) -> None:
    with admin_client(stack2) as sub, shadow_client(stack2).connect() as app:
        sub.connect()
        sub.subscribe("fleet/vehicle-0001/telemetry", qos=1)
        # Before the vehicle ever connected (no session, no shadow yet): only the sync on
        # connect can tell it.
        assert app.update("vehicle-0001", desired={"publish_interval": 0.2}).accepted
        summary = run_sim(stack2, tmp_path, count=8)
        assert summary.shadow_deltas == 1
        assert summary.errors == 0, summary.last_errors
        first = telemetry_ts(sub.expect(8, timeout=10), "vehicle-0001")
        # Stopped again; a new desired value waits in the shadow for the next start.
        doc = app.get("vehicle-0001").document
        assert doc["state"]["reported"]["publish_interval"] == 0.2
        assert "delta" not in doc["state"]
        assert app.update("vehicle-0001", desired={"publish_interval": 0.4}).accepted
        assert "delta" in app.get("vehicle-0001").document["state"]
        summary = run_sim(stack2, tmp_path, count=6)
        assert summary.shadow_deltas == 1
        second = telemetry_ts(sub.expect(6, timeout=10), "vehicle-0001")
        doc = wait_for("0.4 reported", lambda: (d := app.get("vehicle-0001").document)["state"]["reported"]
                       ["publish_interval"] == 0.4 and d, 5)
        assert "delta" not in doc["state"]
    # Publishing starts once the vehicle heard back from its shadow: the first fix already has it.
    assert spacing(first) == pytest.approx(200, rel=0.25), gaps(first)
    assert spacing(second) == pytest.approx(400, rel=0.25), gaps(second)
    assert max(gaps(first)) < 500, gaps(first)  # not the --rate of 1 s, not even for the first fix
    assert max(gaps(second)) < 700, gaps(second)


def test_a_silent_shadow_service_delays_publishing_boundedly_and_is_reported(stack2: Stack, tmp_path: Path) -> None:
    from ecokit.runtime import process
    from ecokit.runtime.local import LocalRuntime

    runtime = stack2.runtime("local")
    assert isinstance(runtime, LocalRuntime)
    entry = runtime._load()["services"]["shadow"]  # the test stops the shadow service by pid
    assert process.stop(process.ProcessRef(int(entry["pid"]), int(entry["start_ticks"])))
    started = time.monotonic()
    summary = run_sim(stack2, tmp_path, count=2, shadow_sync_timeout=1.5)
    assert time.monotonic() - started < 10
    assert summary.produced == 2
    assert summary.shadow_sync_seconds == pytest.approx(1.5, abs=0.3)
    assert summary.errors == 1
    assert "heard nothing from their shadows" in summary.last_errors[-1]
    assert "vehicle-0001" in summary.last_errors[-1]


def test_shadows_off_with_no_shadow_and_against_a_foreign_broker(
        stack2: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from urllib.parse import quote

    config = str(stack2.project_dir / "ecokit.yaml")
    target = stack_connection(stack2).target
    user, password = stack2.service_credentials("ecokit-admin")
    broker = f"mqtt://{user}:{quote(password, safe='')}@{target.host}:{target.port}"
    runs = [["-c", config, "--no-shadow"], ["--broker", broker]]
    for extra in runs:
        code, summary = cli_json(capsys, "simulate", *extra, "--vehicles", "2", "--count", "2", "--rate", "100ms",
                                 "--quiet", "--json", "--queue", str(tmp_path / "q.sqlite"))
        assert code == 0
        assert summary["shadow"] is False
        assert summary["shadow_reports"] == 0
    with shadow_client(stack2).connect() as app:
        assert app.get("vehicle-0001").code == 404  # nothing reported
    # Asked for explicitly, shadows work against any broker URL too.
    code, summary = cli_json(capsys, "simulate", "--broker", broker, "--shadow", "--vehicles", "1", "--count", "2",
                             "--rate", "100ms", "--quiet", "--json", "--queue", str(tmp_path / "q.sqlite"))
    assert code == 0
    assert summary["shadow"] is True
    with shadow_client(stack2).connect() as app:
        doc = wait_for("the report", lambda: (r := app.get("vehicle-0001")).accepted and r.document, 5)
    assert doc["state"]["reported"]["firmware"]
