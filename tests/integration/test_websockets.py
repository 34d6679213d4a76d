"""ws:// and wss:// for bench, simulate and the conformance suite, against a Mosquitto with websockets.

Debian's mosquitto cannot serve websockets; ``infra/ws-broker.sh`` (run by infra/install.sh)
builds the same Mosquitto with a websocket listener for the test lane. The stack here runs it
(its folder first on PATH, ``broker.websockets: on``) with the ``tls`` profile: ws and wss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.bench import BenchOptions, parse_slo, run_bench, url_target, validate_scenario
from ecokit.cli import main
from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project, ws_broker_binary

ROOT = Path(__file__).resolve().parents[2]
WS_USER = {"username": "ws-client", "superuser": True, "password": "ws-client-password"}
BINARY = ws_broker_binary()
pytestmark = [
    pytest.mark.usefixtures("server_binaries"),
    pytest.mark.skipif(BINARY is None and not os.environ.get("CI"),
                       reason="no Mosquitto with websockets: run `bash infra/ws-broker.sh` (infra/install.sh does)"),
]


@pytest.fixture(scope="module")
def ws_stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    assert BINARY is not None, "CI builds the websocket broker in infra/install.sh (infra/ws-broker.sh)"
    folder = tmp_path_factory.mktemp("ws")
    # The transport is under test here, not the device model: a superuser of its own on the
    # device listeners, ws next to wss, client ids free (ecokit's own users are on the internal,
    # plain-TCP listener, and devices' client ids are their usernames: docs/security.md).
    project = write_project(folder, devices=2, users=[WS_USER], extra={
        "bridge": {"enabled": False}, "processor": {"enabled": False},
        "broker": {"websockets": "on", "bind_client_ids": False}, "tls": {"plain_listener": True}})
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{BINARY.parent}{os.pathsep}{path}"
    try:
        with running_stack(project, profile="tls") as stack:
            yield stack
    finally:
        os.environ["PATH"] = path


def endpoint(stack: Stack, scheme: str) -> str:
    url = stack.broker_endpoints()[scheme]
    assert url.startswith(f"{scheme}://"), url
    return url


def admin(stack: Stack) -> tuple[str, str]:
    return str(WS_USER["username"]), str(WS_USER["password"])


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_bench_over_websockets_loses_nothing_and_times_the_upgrade(ws_stack: Stack, scheme: str) -> None:
    user, password = admin(ws_stack)
    target = url_target(endpoint(ws_stack, scheme), username=user, password=password,
                        ca_file=ws_stack.cert_paths.ca_cert)
    assert target.broker.websocket_path == "/mqtt"
    spec = validate_scenario({"publishers": 4, "qos": 1, "phases": [
        {"name": "steady", "duration": "2s", "total_rate": 200}]})
    result = run_bench("ws", spec, target, slos=[parse_slo("loss=0")], options=BenchOptions(signals=False))
    assert result.passed, [v.line for v in result.violations] + result.errors
    assert result.settings["transport"] == scheme
    assert result.settings["subscriber_library"] == "paho"  # paho's websocket transport receives
    assert result.total.unique == 400
    connect = result.total.connect
    assert connect["ws_ms"]["count"] == 4  # the HTTP upgrade, timed on its own
    assert ("tls_ms" in connect) == (scheme == "wss")


@pytest.mark.parametrize(("scheme", "client"), [("ws", "fast"), ("wss", "fast"), ("ws", "paho")])
def test_simulate_over_websockets(ws_stack: Stack, capsys: pytest.CaptureFixture[str], scheme: str,
                                  client: str) -> None:
    user, password = admin(ws_stack)
    code = main(["simulate", "--broker", endpoint(ws_stack, scheme), "--username", user, "--password", password,
                 *(["--ca", str(ws_stack.cert_paths.ca_cert)] if scheme == "wss" else []),
                 "--vehicles", "3", "--count", "3", "--rate", "100ms", "--no-shadow", "--json", "--client", client,
                 "-c", str(ws_stack.project_dir / "ecokit.yaml")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["ever_connected"] == 3
    assert summary["produced"] == 9
    assert summary["queued_left"] == summary["dropped"] == 0


def test_the_conformance_suite_runs_over_websockets(ws_stack: Stack, tmp_path: Path) -> None:
    user, password = admin(ws_stack)
    report = tmp_path / "conformance.json"
    done = subprocess.run([sys.executable, "-m", "ecokit", "conformance", "--broker", endpoint(ws_stack, "ws"),
                           "--username", user, "--password", password, "--area", "QoS", "--area", "retained",
                           "--area", "topics", "--output", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    document = json.loads(report.read_text())
    assert "ws://" in json.dumps(document)
