"""ecokit's pytest plugin (ecokit.pytest_plugin), driven as a user's suite would be: pytester
writes test files and runs pytest on them in a subprocess; real stacks start and stop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project

RECORD = '''
import json, os
from pathlib import Path

from ecokit.status import stack_status

def record(name, test_stack):
    status = stack_status(test_stack.stack)
    pids = {s.name: s.pid for s in status.services if s.pid}
    Path(os.environ["ECOKIT_PLUGIN_OUT"], name).write_text(json.dumps(
        {"config": str(test_stack.stack.loaded.config_file), "stack": test_stack.name, "pids": pids,
         "profile": test_stack.stack.active_profile, "devices": len(test_stack.stack.devices())}))
'''


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


@pytest.fixture
def out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    monkeypatch.setenv("ECOKIT_PLUGIN_OUT", str(folder))
    return folder


def records(folder: Path) -> dict[str, dict[str, object]]:
    return {p.name: json.loads(p.read_text()) for p in folder.iterdir()}


def assert_stopped(record: dict[str, object]) -> None:
    pids = record["pids"]
    assert isinstance(pids, dict)
    assert pids, "the stack ran services"
    assert not [name for name, pid in pids.items() if alive(int(pid))], "every service is stopped"
    stack = Stack.load(Path(str(record["config"])), env={})
    assert stack.current_runtime() is None


def test_a_session_stack_is_shared_and_stopped_even_when_a_test_fails(pytester: pytest.Pytester,
                                                                        out_dir: Path, server_binaries: None) -> None:
    pytester.makepyfile(test_user_suite=RECORD + '''
def test_first(ecokit_stack):
    record("first", ecokit_stack)

def test_second_fails(ecokit_stack):
    record("second", ecokit_stack)
    raise AssertionError("fails on purpose")
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    found = records(out_dir)
    assert found["first"]["stack"] == found["second"]["stack"], "one stack for the session"
    assert found["first"]["devices"] == 3
    assert_stopped(found["first"])


def test_markers_and_parameters_choose_profile_and_scope(pytester: pytest.Pytester, out_dir: Path,
                                                         server_binaries: None) -> None:
    pytester.makepyfile(test_tls_module=RECORD + '''
import pytest

pytestmark = pytest.mark.ecokit(profile="tls", devices=1)

def test_tls(ecokit_stack, broker, mqtt_client):
    record("tls", ecokit_stack)
    assert broker.tls
    assert broker.url.startswith("mqtts://")
    client = mqtt_client()
    client.subscribe(broker.topic("x"), 1)
    client.publish(broker.topic("x"), b"hello", qos=1)
    assert client.expect(1)[0].payload == b"hello"

@pytest.mark.parametrize("ecokit_stack", [{"profile": "tls", "devices": 1}], indirect=True)
def test_same_settings_by_parameter(ecokit_stack):
    record("tls-param", ecokit_stack)
''', test_module_scoped='''
import pytest
from conftest_records import record

pytestmark = pytest.mark.ecokit(scope="module", devices=2)

def test_module_stack(ecokit_stack):
    record("module", ecokit_stack)
''', test_zz_after='''
import json, os
from pathlib import Path

def test_module_stack_is_gone_once_its_module_ended():
    from ecokit.stack import Stack
    rec = json.loads(Path(os.environ["ECOKIT_PLUGIN_OUT"], "module").read_text())
    assert Stack.load(Path(rec["config"]), env={}).current_runtime() is None
''')
    pytester.makepyfile(conftest_records=RECORD)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=4)
    found = records(out_dir)
    assert found["tls"]["profile"] == "tls"
    assert found["tls"]["stack"] == found["tls-param"]["stack"], "equal settings share a stack"
    assert found["module"]["stack"] != found["tls"]["stack"]
    assert found["module"]["devices"] == 2
    for name in ("tls", "module"):
        assert_stopped(found[name])


def test_clients_devices_influx_and_shadows(pytester: pytest.Pytester, server_binaries: None) -> None:
    pytester.makepyfile(test_pipeline_suite='''
import json, time

def telemetry(vehicle, seq):
    return json.dumps({"v": 1, "vehicle": vehicle, "seq": seq, "ts": int(time.time() * 1000), "lat": 52.5,
                       "lng": 13.4, "speed": 40.0, "heading": 90.0, "fuel": 50.0, "odometer": 1000.0,
                       "engine": True, "status": "moving"})

def test_device_traffic_lands_in_influxdb(device, mqtt_client, influx):
    car = mqtt_client(device=device)
    reason = car.publish(f"fleet/{device.id}/telemetry", telemetry(device.id, 1), qos=1)
    assert not reason.is_failure
    denied = car.publish("fleet/someone-else/telemetry", telemetry("someone-else", 1), qos=1)
    assert denied.is_failure, "the ACL refuses another device's topic"
    rows = influx.wait_for("telemetry", vehicle=device.id, count=1, timeout=30)
    assert rows[0]["seq"] == 1

def test_a_wrong_password_is_refused_with_a_deadline(device, mqtt_client):
    client = mqtt_client(username=device.id, password="not-the-password", connect=False, timeout=3)
    reason, _, _ = client.connect()
    assert reason.is_failure

def test_each_test_gets_its_own_device(device, ecokit_stack):
    assert device.id.startswith("t-")
    assert device.id in {d.id for d in ecokit_stack.stack.devices()}

def test_shadows(shadow, device):
    reply = shadow.update(device.id, desired={"publish_interval": 5})
    assert reply.accepted
    assert shadow.get(device.id).document["state"]["desired"] == {"publish_interval": 5}
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_settings_errors_are_one_clear_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.ecokit(profle="tls")
def test_typo(ecokit_stack):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown ecokit stack setting(s) profle*"])
    assert "Traceback" not in result.stdout.str()


@pytest.fixture(scope="module")
def open_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with profile open: anonymous clients welcome (the sandbox a user's --broker points at)."""
    config = write_project(tmp_path_factory.mktemp("open-broker"), devices=1, stack="pluginopen")
    with running_stack(config, profile="open") as stack:
        yield stack


def test_broker_option_points_clients_elsewhere_and_starts_no_stack(pytester: pytest.Pytester,
                                                                     open_broker: Stack) -> None:
    url = open_broker.broker_endpoints()["mqtt"]
    pytester.makepyfile(test_external='''
from ecokit.pytest_plugin import POOL_KEY

def test_external(broker, mqtt_client, pytestconfig):
    client = mqtt_client(anonymous=True)
    client.subscribe(broker.topic("#"), 1)
    client.publish(broker.topic("a"), b"1", qos=1)
    assert client.expect(1)[0].topic == broker.topic("a")
    assert POOL_KEY not in pytestconfig.stash, "no ecokit stack was started"
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--broker", url)
    result.assert_outcomes(passed=1)


def test_pyargs_conformance_runs_against_a_given_broker(pytester: pytest.Pytester, open_broker: Stack) -> None:
    url = open_broker.broker_endpoints()["mqtt"]
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pyargs", "ecokit.conformance",
                                           "--broker", url, "-k", "retained or dollar or tls_server or denied_publish")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 5
    assert outcomes.get("skipped", 0) >= 2, "no TLS listener, no restricted user: skipped, not failed"
    result.stdout.fnmatch_lines(["*MQTT conformance*", f"broker: {url}*(given by --broker)",
                                 "spec area*passed*failed*xfail*skipped", "could not run here (skipped):",
                                 "*tls_server_certificate_verified: the target has no TLS listener*"])
    assert time.monotonic() - started < 120


def test_an_unreachable_broker_fails_the_conformance_run_in_one_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pyargs", "ecokit.conformance",
                                           "--broker", "mqtt://127.0.0.1:1", "-k", "retained")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1
    assert outcomes.get("passed", 0) == 0
    result.stdout.fnmatch_lines(["*cannot reach the broker at mqtt://127.0.0.1:1*"])
