"""`ecokit bench` and the stack's pipeline, on a real local stack (mosquitto, bridge, influxd):
bench traffic is not archived by default while fleet traffic is; with `rules.archive.exclude: []`,
`--pipeline` counts every sent message in the archive."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ecokit.cli import main
from ecokit.replay import ARCHIVE, Archive
from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing import SyncClient, running_stack, wait_for, write_project

pytestmark = pytest.mark.usefixtures("server_binaries", "no_caller_environment")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    # The default pipeline (bridge and its rules); the fleet processor is not needed here.
    with running_stack(write_project(tmp_path, extra={"processor": {"enabled": False}})) as running:
        yield running


def bench(capsys: pytest.CaptureFixture[str], stack: Stack, *extra: str) -> tuple[int, dict, str]:
    code = main(["bench", "steady", "-c", str(stack.project_dir / "ecokit.yaml"), "--duration", "2s",
                 "--rate", "300", "--publishers", "3", "--subscribers", "0", "--qos", "1", "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code in (0, 99) else {}, captured.err


def archived(stack: Stack, topic_filter: str) -> int:
    with InfluxV1(stack.influx_endpoint("reader")) as client:
        return Archive(client, retention_policy=stack.retention_policy_of(ARCHIVE)).count(
            0, time.time_ns() + 10**9, [topic_filter])


def test_bench_traffic_is_archived_only_when_asked_and_pipeline_counts_it(
        stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    # (a) the default archive skips bench/#: --pipeline refuses, a plain run stores nothing of it...
    code, _, err = bench(capsys, stack, "--pipeline")
    assert code == 2
    assert "rules.archive.exclude has bench/#" in err
    assert "exclude: []" in err
    code, doc, _ = bench(capsys, stack)
    assert code == 0
    assert doc["pipeline"] == {"measured": False, "engine": "the ecokit bridge", "rules": [],
                               "excluded_by": {"archive": "bench/#"}}
    sent = doc["total"]["sent"]
    assert sent > 400
    # ...while fleet telemetry published after it is archived: the bridge reads in order, so the
    # bench messages had their turn before it.
    username, password = stack.service_credentials("ecokit-admin")
    with SyncClient("127.0.0.1", stack.config.broker.ports.internal, username=username, password=password) as admin:
        admin.connect()
        admin.publish("fleet/veh-0001/telemetry", b'{"lat": 52.5, "lng": 13.4}', qos=1)
    wait_for("the telemetry archived", lambda: archived(stack, "fleet/veh-0001/telemetry") == 1, timeout=20.0)
    assert archived(stack, f"bench/{doc['run_id']}/+") == 0

    # (b) exclude: [] archives bench traffic: --pipeline reports every sent message stored.
    config_file = stack.project_dir / "ecokit.yaml"
    document = yaml.safe_load(config_file.read_text())
    document.setdefault("rules", {})["archive"] = {"exclude": []}
    config_file.write_text(yaml.safe_dump(document))
    reloaded = Stack.load(config_file, env={})
    reloaded.restart(["bridge"])
    code, doc, _ = bench(capsys, reloaded, "--pipeline")
    assert code == 0
    pipeline = doc["pipeline"]
    assert pipeline["measured"] is True
    assert pipeline["sent"] == doc["total"]["sent"] > 400
    assert pipeline["stored"] == pipeline["sent"], pipeline
    assert pipeline["complete"] is True
    assert 0 <= pipeline["receive_lag_ms"] < pipeline["stored_lag_ms"] + 1 < 30_000
    assert archived(reloaded, f"bench/{doc['run_id']}/+") == pipeline["sent"]
