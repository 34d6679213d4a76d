"""`ecokit bench` argument handling that needs no server (runs: tests/integration/test_bench.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecokit.cli import main
from ecokit.testing import write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    phases = [{"name": "morning", "duration": "1m", "total_rate": 50},
              {"name": "peak", "duration": "30s", "total_rate": 50, "ramp_to": 500}]
    return write_project(tmp_path / "proj", devices=2, extra={"bench": {"scenarios": {"rush-hour": {
        "description": "mornings", "phases": phases}}}})


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_builtins_and_the_projects_scenarios(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "bench", "--list", "-c", str(project))
    assert code == 0
    for name in ("steady", "ramp", "spike", "soak", "rush-hour"):
        assert name in out
    assert "ecokit.yaml" in out
    assert "rush-hour: mornings" in out
    assert "500/s" in out


def test_list_works_without_a_project(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "bench", "--list")
    assert code == 0
    assert "soak" in out


@pytest.mark.parametrize(("args", "message"), [
    (["bench"], "give a SCENARIO"),
    (["bench", "nope"], "no bench scenario 'nope'"),
    (["bench", "steady", "--slo", "p99=5"], "unknown key 'p99'"),
    (["bench", "steady", "--slo", "peak.p99_ms=5"], "no phase 'peak'"),
    (["bench", "steady", "--payload", "xml"], "expected binary or json"),
    (["bench", "steady", "--fanout", "some"], "expected all or shared"),
    (["bench", "steady", "--mqtt", "4"], "expected 5 or 3.1.1"),
    (["bench", "steady", "--duration", "soon"], "--duration 'soon' is not a duration"),
    (["bench", "steady", "--payload", "json", "--payload-size", "50"], "below the 104 bytes"),
    (["bench", "steady", "--as-devices", "--broker", "mqtt://127.0.0.1:9"], "does not go with a broker URL"),
    (["bench", "steady", "--broker", "http://127.0.0.1:9"], "scheme must be mqtt://, mqtts://, ws:// or wss://"),
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], project: Path, args: list[str], message: str) -> None:
    code, _, err = run(capsys, *args, "-c", str(project))
    assert code == 2, err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_a_stack_that_is_not_up_is_an_error(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = run(capsys, "bench", "steady", "-c", str(project))
    assert code == 1
    assert "is not up" in err
    assert "--broker" in err


def test_the_documented_environment_reaches_the_options(capsys: pytest.CaptureFixture[str], project: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QOS", "7")
    code, _, err = run(capsys, "bench", "steady", "-c", str(project))
    assert code == 2
    assert "QOS" in err
    monkeypatch.setenv("QOS", "1")
    monkeypatch.setenv("BROKER_PORT", "1884")
    code, _, err = run(capsys, "bench", "steady", "-c", str(project))
    assert code == 1
    assert "BROKER_HOST" in err


def test_the_public_surface_is_sorted_and_importable() -> None:
    import ecokit.bench

    names = ecokit.bench.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert getattr(ecokit.bench, name) is not None


def test_compare_writes_one_report_of_two_saved_results(capsys: pytest.CaptureFixture[str], project: Path,
                                                        tmp_path: Path) -> None:
    docs = []
    for run_id, sent in (("aaaa0001", 1000), ("bbbb0002", 1500)):
        doc = {"scenario": "steady", "run_id": run_id, "started_at": "2026-01-01T00:00:00+00:00", "target": "t",
               "passed": sent == 1000, "slo": [], "timeline": [{"t": 1.0, "sent": sent, "received": sent}],
               "total": {"sent": sent, "unique": sent, "send_rate": float(sent), "latency_ms": {"p99_ms": 2.5}}}
        path = tmp_path / f"{run_id}.json"
        path.write_text(json.dumps(doc))
        docs.append(path)
    report = tmp_path / "out" / "compare.html"
    code, _, err = run(capsys, "bench", "--compare", str(docs[0]), str(docs[1]), "--report", str(report),
                         "-c", str(project))
    assert code == 0, err
    page = report.read_text()
    assert "aaaa0001" in page
    assert "bbbb0002" in page
    assert "1.50x" in page  # B/A of sent
    assert "<script src" not in page  # everything inline: nothing loads from the network
    assert "<link" not in page
    assert "default-src 'none'" in page


@pytest.mark.parametrize(("args", "message"), [
    (["--compare", "missing-a.json", "missing-b.json"], "cannot read it"),
    (["steady", "--out", "influxdb=ftp://x/db"], "expected http:// or https://"),
    (["steady", "--out", "kafka"], "the only output is influxdb"),
])
def test_bad_report_and_output_options_exit_2(capsys: pytest.CaptureFixture[str], project: Path, args: list[str],
                                               message: str) -> None:
    code, _, err = run(capsys, "bench", *args, "-c", str(project))
    assert code == 2, err
    assert message in " ".join(err.split())
