"""The stack commands' side of the CLI contract against real processes: up/status/ps as JSON,
the profile staying active across down and up, logs of every service, a busy port."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from ecokit.cli import main
from ecokit.stack import Stack


@pytest.fixture(autouse=True)
def _private_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ECOKIT_STATE_DIR", str(tmp_path / "state"))


def test_profile_json_ps_and_logs_across_down_and_up(make_project: Callable[..., Path], server_binaries: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = str(make_project(devices=1, stack="lifecycle"))
    try:
        assert main(["up", "-c", config, "--profile", "tls", "--json"]) == 0
        captured = capsys.readouterr()
        up = json.loads(captured.out)
        assert up["profile"] == "tls"
        assert up["state"] == "running"
        assert up["actions"]["broker"] == "started"
        assert up["started_at"].endswith("Z")
        assert "ready  broker" in captured.err, "progress goes to stderr under --json"
        assert main(["ps", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)["stacks"]
        assert (row["stack"], row["state"], row["runtime"], row["profile"]) == ("lifecycle", "running", "local", "tls")
        assert row["services_running"] == row["services"] > 0
        assert row["endpoints"]["mqtts"].startswith("mqtts://127.0.0.1:")
        assert main(["logs", "-c", config, "-n", "5"]) == 0
        lines = capsys.readouterr().out.splitlines()
        prefixes = {line.split("|", 1)[0].strip() for line in lines if "|" in line}
        assert {"broker", "influxdb", "bridge", "shadow"} <= prefixes, prefixes
        assert main(["down", "-c", config]) == 0
        capsys.readouterr()
        assert main(["ps", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["stacks"] == [], "a stack that is down is not listed"
        assert main(["status", "-c", config, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["profile"] == "tls", "the profile outlives down"
        assert main(["up", "-c", config, "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["profile"] == "tls", "and comes back with up"
        assert again["broker"]["tls"] is True
        assert main(["up", "-c", config, "--profile", "default", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["broker"]["tls"] is False
        assert main(["status", "-c", config]) == 0
        assert "profile default" in capsys.readouterr().out
    finally:
        main(["down", "-c", config, "--purge"])


def test_a_busy_port_names_its_key_where_it_came_from_and_who_holds_it(
        make_project: Callable[..., Path], server_binaries: None, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_project(devices=1)
    port = Stack.load(config, env={}).config.broker.ports.mqtt
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        try:
            code = main(["up", "-c", str(config)])
        finally:
            main(["down", "-c", str(config), "--purge"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"port 127.0.0.1:{port} (broker.ports.mqtt, from {config}) is already in use by pid" in err
    assert "hint: stop pid" in err
    assert "ECOKIT_BROKER__PORTS__MQTT=<port>" in err
    assert "Traceback" not in err
