"""The policy behind `ecokit simulate` and the bench's target choice, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecokit.bench.targets import broker_choice, choose_target
from ecokit.config.model import SimulatorConfig
from ecokit.errors import StackNotRunning, UsageError
from ecokit.mqtt.target import BrokerChoice
from ecokit.sim.launch import SimRequest, numbered_ids, prepare
from ecokit.stack import Stack
from ecokit.testing import write_project

BROKER = BrokerChoice("mqtt://alice:pw@127.0.0.1:1884")


def test_any_broker_gets_numbered_vehicles_without_shadows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = prepare(SimulatorConfig(rate="200ms", qos=0, mqtt="3.1.1", region="dubai"),
                  SimRequest(vehicles=3, broker=BROKER, count=2), stack=None)
    assert [v.id for v in run.fleet] == ["vehicle-0001", "vehicle-0002", "vehicle-0003"]
    assert run.connection.target.url == "mqtt://127.0.0.1:1884"
    assert run.connection.auth("vehicle-0001").username == "alice"
    s = run.settings
    assert (s.qos, s.protocol, s.count, s.shadow, s.flat_out) == (0, 4, 2, False, False)
    assert s.queue_path == Path(".ecokit") / "sim" / "queue.sqlite"
    assert run.region.name == "dubai"
    assert run.fleet[0].interval == pytest.approx(0.2)


def test_registered_devices_come_first_against_any_broker(tmp_path: Path) -> None:
    stack = Stack.load(write_project(tmp_path / "p", devices=["v1", "v2"]), env={})
    run = prepare(SimulatorConfig(), SimRequest(vehicles=3, broker=BROKER), stack=stack)
    assert [v.id for v in run.fleet] == ["v1", "v2", "vehicle-0001"]
    assert run.settings.queue_path == stack.paths.root / "sim" / "queue.sqlite"
    assert numbered_ids(["vehicle-0002"], 2) == ["vehicle-0002", "vehicle-0001"]


def test_a_stack_that_is_not_up_is_named(tmp_path: Path) -> None:
    stack = Stack.load(write_project(tmp_path / "p", devices=2), env={})
    with pytest.raises(StackNotRunning, match="stack 'test' is not up"):
        prepare(SimulatorConfig(), SimRequest(vehicles=2), stack=stack)


@pytest.mark.parametrize(("config", "request_", "why"), [
    (SimulatorConfig(), SimRequest(duration=5, count=5, broker=BROKER), "--duration or --count, not both"),
    (SimulatorConfig(rate="0"), SimRequest(broker=BROKER), "flat-out mode"),
])
def test_requests_that_cannot_run_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              config: SimulatorConfig, request_: SimRequest, why: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=why):
        prepare(config, request_, stack=None)


def test_the_bench_broker_comes_from_the_flag_then_the_environment() -> None:
    env = {"BROKER_HOST": "10.0.0.5", "BROKER_PORT": "1999", "BROKER_USERNAME": "env-user"}
    assert broker_choice(None, {}) is None
    from_env = broker_choice(None, env)
    assert from_env == BrokerChoice("mqtt://10.0.0.5:1999", username="env-user")
    assert broker_choice(None, env, username="flag-user") == BrokerChoice("mqtt://10.0.0.5:1999",
                                                                           username="flag-user")
    assert broker_choice("mqtt://h:1", env) == BrokerChoice("mqtt://h:1")  # the flag wins, env creds ignored
    target, added = choose_target(None, from_env)
    assert (target.broker.url, target.auth.username, added) == ("mqtt://10.0.0.5:1999", "env-user", [])
    with pytest.raises(UsageError, match="does not go with a broker URL"):
        choose_target(None, from_env, devices=2)
