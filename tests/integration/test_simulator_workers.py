"""`ecokit simulate --workers N`: one fleet over N processes against a real Mosquitto."""

from __future__ import annotations

import json

import pytest

from ecokit.cli import main
from ecokit.stack import Stack

pytestmark = pytest.mark.usefixtures("server_binaries")


def test_a_fleet_split_over_two_workers_publishes_every_message_once(
        running: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECOKIT_BROKER_URL", raising=False)
    code = main(["simulate", "--vehicles", "6", "--workers", "2", "--count", "4", "--rate", "100ms", "--as-admin",
                 "--no-shadow", "--json", "-c", str(running.project_dir / "ecokit.yaml")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["vehicles"] == 6
    assert summary["ever_connected"] == 6
    assert summary["produced"] == 24
    assert sorted(summary["drift_ms"]) == ["max", "p50", "p99"]
    assert summary["queued_left"] == summary["dropped"] == 0
    assert list((running.paths.root / "sim").glob("queue.w*.sqlite"))  # one offline queue per worker
