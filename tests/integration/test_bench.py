"""`ecokit bench` against a real local stack: exit codes, JSON, custom scenarios, reconnects, ACL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecokit.bench import BUILTIN, BenchOptions, Overrides, apply_overrides, parse_slo, run_bench, stack_target
from ecokit.bench.runner import Progress
from ecokit.cli import main
from ecokit.stack import Stack
from ecokit.testing import running_stack

pytestmark = pytest.mark.usefixtures("server_binaries", "no_caller_environment")

ProjectFactory = Callable[..., Path]

CUSTOM = {"scenarios": {"two-step": {
    "description": "a quiet phase, then a busier one",
    "publishers": 4,
    "qos": 1,
    "payload_size": 128,
    "subscribers": 2,
    "slo": {"loss": 0},
    "phases": [
        {"name": "quiet", "duration": "1500ms", "total_rate": 100},
        {"name": "busy", "duration": "1500ms", "total_rate": 400, "slo": {"min_rate": 200}},
    ],
}}}


@pytest.fixture
def custom_stack(make_project: ProjectFactory, server_binaries: None) -> Iterator[Stack]:
    # The pipeline services are off: the figures are the broker's, not the bridge's.
    project = make_project(extra={"bench": CUSTOM, "bridge": {"enabled": False}, "processor": {"enabled": False}})
    with running_stack(project) as stack:
        yield stack


def config_of(stack: Stack) -> str:
    return str(stack.project_dir / "ecokit.yaml")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_violated_slo_exits_99_with_one_line_each_and_the_json_has_the_documented_shape(
        running: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "results" / "steady.json"
    code, out, err = cli(capsys, "bench", "steady", "-c", config_of(running),
                         "--duration", "3s",
                         "--rate", "500", "--publishers", "10", "--quiet", "--slo", "p99_ms=0.001",
                         "--slo", "loss=0", "--slo", "min_rate=1000000", "--output", str(out_file))
    assert code == 99, err
    violated = [line for line in err.splitlines() if line.startswith("SLO violated")]
    assert len(violated) == 2, err
    assert violated[0].startswith("SLO violated: p99_ms = ")
    assert violated[0].endswith("> 0.001 ms")
    assert violated[1].startswith("SLO violated: min_rate = ")
    assert "SLO met: loss = 0% (0 of 1,500) <= 0%" in out
    assert "throughput" in out
    assert "latency, ms" in out

    doc = json.loads(out_file.read_text())
    assert doc["scenario"] == "steady"
    assert doc["passed"] is False
    assert doc["stopped_early"] is False
    assert doc["settings"]["publishers"] == 10
    assert doc["settings"]["filter"] == f"bench/{doc['run_id']}/+"
    assert doc["settings"]["subscriber_library"] == "fast"
    total = doc["total"]
    assert (total["planned"], total["sent"], total["unique"], total["lost"], total["duplicates"]) == (
        1500, 1500, 1500, 0, 0)
    assert total["latency_ms"]["count"] == 1500
    assert 0 < total["latency_ms"]["p50_ms"] <= total["latency_ms"]["p99_ms"] <= total["latency_ms"]["max_ms"]
    # Paced, not flat out; how closely the offered rate is kept is a figure of
    # benchmarks/bench_floor.py (send lag), not a threshold for a shared test machine.
    assert total["send_rate"] == pytest.approx(500, rel=0.5)
    assert total["latency_histogram"]
    assert [p["name"] for p in doc["phases"]] == ["steady"]
    assert {s["key"]: s["ok"] for s in doc["slo"]} == {"p99_ms": False, "loss": True, "min_rate": False}
    assert len(doc["timeline"]) >= 3
    assert set(doc["timeline"][0]) >= {"t", "phase", "offered", "sent", "received", "p50_ms", "p99_ms", "max_ms",
                                       "publishers_connected", "subscribers_connected"}
    assert sum(row["sent"] for row in doc["timeline"]) == 1500
    assert doc["connections"]["publishers"]["ever_connected"] == 10
    assert doc["connections"]["publishers"]["acked"] == 1500
    process = doc["broker"]["process"]
    assert process["pid"] > 0
    assert process["rss_mb_max"] > 0
    assert doc["broker"]["sys"]["available"] is True
    assert doc["broker"]["sys"]["version"].startswith("mosquitto version")
    assert doc["total"]["connect"]["ok"] == 10  # the publishers' connects, timed step by step
    assert doc["total"]["connect"]["total_ms"]["p95_ms"] > 0
    assert doc["total"]["puback_ms"]["count"] == 1500
    report = out_file.with_suffix(".html").read_text()  # the HTML report, next to the JSON
    assert "SLO violated: p99_ms" in report
    assert doc["run_id"] in report


def test_a_custom_scenario_from_ecokit_yaml_passes_and_prints_json(custom_stack: Stack,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "bench", "two-step", "-c", config_of(custom_stack), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["passed"] is True
    assert [(p["name"], p["sent"], p["expected"], p["unique"]) for p in doc["phases"]] == [
        ("quiet", 150, 300, 300), ("busy", 600, 1200, 1200)]
    assert {s["key"] for s in doc["slo"]} == {"loss", "busy.min_rate"}
    assert doc["connections"]["subscribers"]["unique_per_subscriber"] == {"0": 750, "1": 750}
    assert "SLO violated" not in err


def test_flags_and_the_environment_override_the_scenario(custom_stack: Stack, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QOS", "0")
    monkeypatch.setenv("PAYLOAD_SIZE", "300")
    code, out, err = cli(capsys, "bench", "two-step", "-c", config_of(custom_stack), "--json",
                         "--subscribers", "3", "--fanout", "shared", "--payload", "json", "--duration", "2s",
                         "--slo", "busy.min_rate=1")
    assert code == 0, err
    doc = json.loads(out)
    assert [(p["qos"], p["payload_size"]) for p in doc["phases"]] == [(0, 300), (0, 300)]
    assert doc["settings"]["filter"].startswith(f"$share/ecokit-bench-{doc['run_id']}/")
    assert doc["total"]["expected"] == doc["total"]["sent"] == 500
    assert doc["total"]["unique"] == 500
    assert {s["key"]: s["limit"] for s in doc["slo"]} == {"loss": 0, "busy.min_rate": 1}


def test_publishes_the_acl_denies_are_lost_and_explained(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    # Devices may publish only under fleet/<their id>/: the broker refuses every message.
    code, out, err = cli(capsys, "bench", "steady", "-c", config_of(running), "--as-devices",
                         "--publishers", "3", "--topic", "bench/{run}/{device}", "--duration", "2s", "--rate", "50",
                         "--quiet", "--slo", "loss=0")
    assert code == 99
    assert "SLO violated: loss = 100% (100 of 100) > 0%" in err
    assert "Not authorized" in err
    assert "the broker refused 100 publishes" in " ".join(out.split())


def test_devices_publish_under_their_own_topics(running: Stack) -> None:
    spec = apply_overrides(BUILTIN["steady"], Overrides(duration=2, rate=150, publishers=3,
                                                        topic="fleet/{device}/bench/{run}"))
    result = run_bench("steady", spec, stack_target(running, devices=3), slos=[parse_slo("loss=0")])
    assert result.passed, [v.line for v in result.violations]
    assert result.settings["as_devices"] is True
    assert result.settings["filter"] == f"fleet/+/bench/{result.run_id}"
    assert result.total.unique == 300


@pytest.mark.parametrize(("qos", "library"), [(1, "fast"), (2, "paho")])
def test_a_broker_restart_is_counted_and_qos_1_and_2_lose_nothing(running: Stack, qos: int, library: str) -> None:
    spec = apply_overrides(BUILTIN["steady"], Overrides(duration=5, rate=400, publishers=8, qos=qos))
    restarted: list[float] = []

    def restart_once(progress: Progress) -> None:
        if progress.state == "running" and progress.elapsed > 1.5 and not restarted:
            restarted.append(progress.elapsed)
            running.restart(["broker"])

    result = run_bench("steady", spec, stack_target(running), progress=restart_once,
                       slos=[parse_slo("loss=0"), parse_slo("reconnects=0")])
    assert restarted
    assert result.settings["subscriber_library"] == library
    c = result.connections
    assert c["publishers"]["reconnects"] == 8
    assert c["subscribers"]["reconnects"] == 1
    assert c["subscribers"]["sessions_lost"] == 0
    assert result.total.sent == 2000
    assert result.total.lost == 0, result.connections["worst_publishers"]
    assert [v.slo.key for v in result.violations] == ["reconnects"]
    assert result.violations[0].line.startswith("SLO violated: reconnects = 9 > 0")


def test_qos_0_across_a_broker_restart_shows_what_was_refused_or_lost(running: Stack) -> None:
    spec = apply_overrides(BUILTIN["steady"], Overrides(duration=4, rate=400, publishers=8, qos=0))
    restarted: list[bool] = []

    def restart_once(progress: Progress) -> None:
        if progress.state == "running" and progress.elapsed > 1.5 and not restarted:
            restarted.append(True)
            running.restart(["broker"])

    result = run_bench("steady", spec, stack_target(running), progress=restart_once)
    t = result.total
    assert t.sent + t.unsent == t.planned == 1600
    assert t.unique + (t.lost or 0) == t.sent
    assert t.unsent + (t.lost or 0) > 0  # refused while disconnected, or sent into a dead socket
    assert result.connections["publishers"]["reconnects"] == 8


def test_mqtt_3_1_1_clients(running: Stack) -> None:
    spec = apply_overrides(BUILTIN["steady"], Overrides(duration=2, rate=200, publishers=4))
    result = run_bench("steady", spec, stack_target(running), options=BenchOptions(protocol=4),
                       slos=[parse_slo("loss=0")])
    assert result.passed
    assert result.settings["mqtt"] == "3.1.1"
    assert result.settings["subscriber_library"] == "paho"


def test_a_wrong_password_is_refused_before_the_run(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    url = running.broker_endpoints()["mqtt"]
    code, _, err = cli(capsys, "bench", "steady", "--broker", url, "--username", "ecokit-admin",
                       "--password", "wrong", "--duration", "1s", "--quiet")
    assert code == 1
    assert "refused the connection" in err
    assert "Traceback" not in err


def test_ctrl_c_stops_early_and_reports(running: Stack) -> None:
    from ecokit.bench.runner import Bench

    spec = apply_overrides(BUILTIN["steady"], Overrides(duration=30, rate=200, publishers=4))
    holder: dict[str, Any] = {}

    def stop_soon(progress: Progress) -> None:
        if progress.state == "running" and progress.elapsed > 1.5:
            holder["bench"].request_stop()

    bench = holder["bench"] = Bench("steady", spec, stack_target(running), progress=stop_soon)
    result = bench.run()
    assert result.stopped_early
    assert 200 <= result.total.sent <= 800
    assert result.total.lost == 0
    assert result.total.send_rate == pytest.approx(200, rel=0.3)


def test_mutual_tls_with_each_devices_certificate(make_project: ProjectFactory, server_binaries: None) -> None:
    project = make_project(devices=2, extra={"bridge": {"enabled": False}, "processor": {"enabled": False}})
    with running_stack(project, profile="mtls") as stack:
        target = stack_target(stack, devices=2)
        assert target.device_broker is not None
        assert target.device_broker.tls
        assert not target.broker.tls, "subscribers as ecokit-admin: the internal listener"
        assert all(auth.client_cert is not None for _, auth in target.devices)
        spec = apply_overrides(BUILTIN["steady"], Overrides(duration=2, rate=200, publishers=2,
                                                            topic="fleet/{device}/bench/{run}"))
        result = run_bench("steady", spec, target, slos=[parse_slo("loss=0")])
    assert result.passed, [v.line for v in result.violations]
    assert result.target.startswith("mqtts://")
    assert result.total.unique == 400
