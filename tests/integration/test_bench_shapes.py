"""Connection-shaped bench runs against a real Mosquitto (plain and TLS listeners), their SLOs,
and the HTML report in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.bench import BenchOptions, parse_slo, run_bench, stack_target, validate_scenario
from ecokit.bench.targets import BenchTarget
from ecokit.cli import main
from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project

pytestmark = pytest.mark.usefixtures("server_binaries")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    """One stack for the module, broker alone: devices on its TLS listener, ecokit-admin on the
    plain internal one."""
    folder = tmp_path_factory.mktemp("shapes")
    project = write_project(folder, devices=8, extra={"bridge": {"enabled": False}, "processor": {"enabled": False}})
    with running_stack(project, profile="tls") as stack:
        yield stack


def plain(stack: Stack) -> BenchTarget:
    """ecokit-admin's target: the internal listener, plain MQTT (devices get TLS only)."""
    target = stack_target(stack)
    assert not target.broker.tls
    assert target.broker.port == stack.config.broker.ports.internal
    return target


def test_a_connect_ramp_reaches_its_target_and_times_every_connect(tls_stack: Stack) -> None:
    spec = validate_scenario({"publishers": 30, "qos": 1, "phases": [
        {"name": "ramp", "duration": "3s", "ramp_clients": 30, "rate": 2},
        {"name": "hold", "duration": "1s", "rate": 2}]})
    result = run_bench("ramp", spec, plain(tls_stack),
                       slos=[parse_slo("ramp.connect_success=100%"), parse_slo("loss=0")])
    assert result.passed, [v.line for v in result.violations]
    ramp, hold = result.phases
    assert ramp.connect["attempts"] == ramp.connect["ok"] == 30
    assert ramp.connect["total_ms"]["count"] == 30
    assert ramp.connect["tcp_ms"]["p50_ms"] > 0
    assert "tls_ms" not in ramp.connect  # plain MQTT: no handshake step
    assert not hold.connect  # nobody connected during the hold
    assert result.settings["connected_at_start"] == 0
    connected = [row["publishers_connected"] for row in result.timeline]
    assert connected[0] < 30
    assert max(connected) == 30
    assert sum(row["connects"] for row in result.timeline) == 30
    assert result.total.sent == result.total.planned == result.total.unique
    assert result.total.puback["count"] == result.total.sent


def test_churn_reconnects_publishers_without_losing_qos1_messages(tls_stack: Stack) -> None:
    spec = validate_scenario({"publishers": 20, "qos": 1, "phases": [
        {"name": "churn", "duration": "2s", "rate": 5, "churn": 0.5}]})
    result = run_bench("churn", spec, plain(tls_stack), slos=[parse_slo("loss=0")])
    assert result.passed, [v.line for v in result.violations]
    assert result.phases[0].connect["attempts"] == 20  # 0.5 x 20 clients x 2 s
    assert result.phases[0].connect["success"] == 1.0


def test_tls_connect_latency_is_measured_step_by_step(tls_stack: Stack) -> None:
    target = stack_target(tls_stack, devices=8)  # publishers as devices: the TLS listener
    assert target.device_broker is not None
    assert target.device_broker.tls
    spec = validate_scenario({"publishers": 8, "qos": 1, "phases": [
        {"name": "connect", "duration": "2s", "connect_rate": 8, "rate": 1}]})
    result = run_bench("tls", spec, target, slos=[parse_slo("tls_p95_ms=5000"), parse_slo("connect_p95_ms=5000"),
                                                  parse_slo("loss=0")])
    assert result.total.unique == result.total.sent > 0  # under fleet/{device}/bench/: what devices may publish
    assert result.passed, [v.line for v in result.violations]
    connect = result.phases[0].connect
    assert connect["tls_ms"]["count"] == 8
    assert connect["tls_ms"]["p50_ms"] > 0
    assert connect["total_ms"]["p50_ms"] >= connect["tls_ms"]["p50_ms"]


@pytest.mark.usefixtures("no_caller_environment")
def test_a_join_spike_checks_its_connect_slos_and_exits_99(tls_stack: Stack, capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    output = tmp_path / "spike.json"
    code = main(["bench", "join-spike", "-c", str(tls_stack.project_dir / "ecokit.yaml"), "--publishers", "44",
                 "--duration", "5s", "--quiet", "--slo", "join.connect_p95_ms=0.001", "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 99, captured.err
    assert "SLO violated: join.connect_p95_ms = " in captured.err
    assert "in phase join" in captured.err
    assert "SLO met: join.connect_success = 100% (40 of 40 attempts) >= 99%" in captured.out
    doc = json.loads(output.read_text())
    assert doc["settings"]["connected_at_start"] == 4
    assert doc["phases"][1]["connect"]["attempts"] == 40
    assert output.with_suffix(".html").exists()


def chromium_render(page: Path, tmp_path: Path) -> tuple[str, str]:
    """The DOM after the page's scripts ran, and Chromium's log (console messages included)."""
    assert CHROMIUM is not None
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'chromium'}", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    return done.stdout, done.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (infra/install.sh installs it)")
def test_the_html_report_renders_in_headless_chromium_without_console_errors(tls_stack: Stack,
                                                                             tmp_path: Path) -> None:
    spec = validate_scenario({"publishers": 5, "qos": 1, "phases": [
        {"name": "ramp", "duration": "2s", "ramp_clients": 5, "rate": 10}, {"name": "hold", "duration": "1s",
                                                                             "rate": 10}]})
    result = run_bench("report", spec, stack_target(tls_stack), options=BenchOptions(drain=5))
    from ecokit.bench.report import render_compare, render_report

    doc = result.to_dict()
    page = tmp_path / "run.html"
    page.write_text(render_report(doc))
    dom, log = chromium_render(page, tmp_path)
    assert console_errors(log) == []
    assert 'data-charts="4"' in dom  # rates, latency, connections, broker process
    assert result.run_id in dom
    compare = tmp_path / "compare.html"
    compare.write_text(render_compare(doc, doc))
    dom, log = chromium_render(compare, tmp_path)
    assert console_errors(log) == []
    assert 'data-charts="4"' in dom
    # The check above can fail: a page whose script throws shows up in the same log.
    broken = tmp_path / "broken.html"
    broken.write_text(render_report(doc).replace("draw();", "draw(); throw new Error('on purpose');"))
    _, log = chromium_render(broken, tmp_path)
    assert any("on purpose" in line for line in console_errors(log))


@pytest.mark.usefixtures("no_caller_environment")
def test_out_influxdb_writes_rows_the_bench_dashboard_queries(tls_stack: Stack,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "steady", "-c", str(tls_stack.project_dir / "ecokit.yaml"), "--publishers", "2",
                 "--duration", "3s", "--rate", "100", "--slo", "loss=0", "--json", "--out", "influxdb"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run_id = json.loads(captured.out)["run_id"]
    from ecokit.dashboards import influxql_queries
    from ecokit.resources import dashboards_dir
    from ecokit.store.influx import InfluxV1

    with InfluxV1(tls_stack.influx_endpoint("reader")) as reader:
        timeline = list(reader.rows(f"SELECT * FROM bench_timeline WHERE \"run\" = '{run_id}'"))
        summary = {r["phase"]: r for r in reader.rows(f"SELECT * FROM bench_summary WHERE \"run\" = '{run_id}'")}
        assert len(timeline) >= 3
        assert sum(r["sent"] for r in timeline) == 300
        assert summary["total"]["sent"] == summary["total"]["received"] == 300
        assert summary["total"]["passed"] is True
        bench_queries = [q for q in influxql_queries(dashboards_dir()) if "bench_" in q]
        assert len(bench_queries) == 14  # 11 series, 2 tables, the run variable
        answers = {q: list(reader.rows(q)) for q in bench_queries}  # every panel's query runs
    assert all(answers.values()), [q for q, rows in answers.items() if not rows]
