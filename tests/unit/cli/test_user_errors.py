"""User mistakes that end in one clear line and exit code 2 (no server needed: each is
refused before anything connects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecokit.cli import main
from ecokit.testing import write_project


@pytest.fixture(autouse=True)
def _clean_environment(no_caller_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> str:
    return str(write_project(tmp_path / "proj", devices=["v1", "v2"]))


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the command; it must exit 2 with exactly one line on stderr, which is returned."""
    code = main(list(args))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1, lines
    assert "Traceback" not in captured.err
    return lines[0]


def test_replay_since_not_before_until(capsys: pytest.CaptureFixture[str], config: str) -> None:
    line = refused(capsys, "replay", "-c", config, "--since", "2024-01-02T00:00:00Z", "--until", "2024-01-01T00:00:00Z")
    assert line == ("Usage error: --since 2024-01-02T00:00:00Z (2024-01-02T00:00:00.000Z) is not before "
                    "--until 2024-01-01T00:00:00Z (2024-01-01T00:00:00.000Z)")


def test_replay_since_equal_to_until(capsys: pytest.CaptureFixture[str], config: str) -> None:
    line = refused(capsys, "replay", "-c", config, "--since", "2024-01-01T00:00:00Z", "--until", "2024-01-01T00:00:00Z")
    assert line == ("Usage error: --since 2024-01-01T00:00:00Z (2024-01-01T00:00:00.000Z) is not before "
                    "--until 2024-01-01T00:00:00Z (2024-01-01T00:00:00.000Z)")


def test_shadow_update_with_invalid_json(capsys: pytest.CaptureFixture[str], config: str) -> None:
    line = refused(capsys, "shadow", "update", "v1", "-c", config, "--desired", "{bad")
    assert line == ("Usage error: --desired is not valid JSON: Expecting property name enclosed in double quotes: "
                    "line 1 column 2 (char 1)")


def test_shadow_update_with_json_that_is_not_an_object(capsys: pytest.CaptureFixture[str], config: str) -> None:
    line = refused(capsys, "shadow", "update", "v1", "-c", config, "--reported", "[1]")
    assert line == "Usage error: --reported must be a JSON object, e.g. '{\"publish_interval\": 5}'"


def test_shadow_update_with_nothing_to_update(capsys: pytest.CaptureFixture[str], config: str) -> None:
    assert refused(capsys, "shadow", "update", "v1", "-c", config) == \
        "Usage error: give --desired JSON and/or --reported JSON"


@pytest.mark.parametrize(("flag", "value", "line"), [
    ("--rate", "abc", "flag --rate: simulator.rate: 'abc': expected a duration like 500ms, 1s, 10m or 1h (got 'abc')"),
    ("--region", "tokyo", "flag --region: simulator.region: 'tokyo': expected one of paris, dubai or a box "
                          "SOUTH,WEST,NORTH,EAST (degrees) (got 'tokyo')"),
    ("--mqtt", "4", "flag --mqtt: simulator.mqtt: Input should be '5' or '3.1.1' (got '4')"),
])
def test_simulate_flags_are_checked_like_the_simulator_section(capsys: pytest.CaptureFixture[str], config: str,
                                                               flag: str, value: str, line: str) -> None:
    assert refused(capsys, "simulate", "-c", config, flag, value) == f"Usage error: {line}"


def test_simulate_flags_are_checked_without_a_project_too(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, "simulate", "--broker", "mqtt://127.0.0.1:1", "--jitter", "soon")
    assert line == ("Usage error: flag --jitter: simulator.jitter: 'soon': expected a duration like 500ms, 1s, "
                    "10m or 1h (got 'soon')")


def test_bench_as_devices_does_not_go_with_a_broker(capsys: pytest.CaptureFixture[str], config: str) -> None:
    assert refused(capsys, "bench", "steady", "-c", config, "--broker", "mqtt://127.0.0.1:1", "--as-devices") == \
        "Usage error: --as-devices uses the stack's registered devices; it does not go with a broker URL"


def test_bench_cert_without_key(capsys: pytest.CaptureFixture[str], config: str) -> None:
    assert refused(capsys, "bench", "steady", "-c", config, "--broker", "mqtts://127.0.0.1:1", "--cert", config) == \
        "Usage error: --cert and --key go together"
