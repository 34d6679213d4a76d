"""The CLI contract (README "Output for scripts"): --json is a switch giving one JSON document
on stdout, --output FILE writes the same document, errors are one red line with a hint (and a
document under --json), exit codes as the README's table says, nothing cut to 80 columns."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from ecokit.cli import app, main
from ecokit.testing import write_project

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# Every command that reports: (command path, extra arguments that make it run without a server).
REPORTING = [("up",), ("status",), ("doctor",), ("certs", "check"), ("devices", "list"), ("devices", "add"),
             ("query",), ("replay",), ("conformance",), ("ps",), ("geofences", "list"), ("geofences", "import")]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ECOKIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ECOKIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", devices=["v1", "v2"])


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def document(text: str) -> Any:
    """stdout under --json: exactly one JSON document."""
    return json.loads(text)


def _command(path: tuple[str, ...]) -> Any:
    import typer.main

    group = typer.main.get_command(app)
    for part in path:
        group = group.commands[part]  # type: ignore[attr-defined]
    return group


@pytest.mark.parametrize("path", REPORTING, ids=[" ".join(p) for p in REPORTING])
def test_every_reporting_command_has_the_json_switch_and_output(path: tuple[str, ...]) -> None:
    params = {p.name: p for p in _command(path).params}
    assert params["as_json"].is_flag, "--json is a switch, never takes a file"
    assert params["as_json"].opts == ["--json"]
    assert "--output" in params["output"].opts


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from ecokit import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"ecokit {__version__}"


def test_shell_completion_is_typers(capsys: pytest.CaptureFixture[str]) -> None:
    options = {o for p in typer.main.get_command(app).params for o in p.opts}
    assert {"--install-completion", "--show-completion"} <= options


def test_status_json_says_profile_and_open_broker(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "status", "--json", "-c", str(project), "--profile", "open")
    assert code == 0
    status = document(out)
    assert status["profile"] == "open"
    assert status["open_broker"] is True
    assert status["state"] == "stopped"
    assert status["started_at"] is None
    assert "started_at_epoch" in status


def test_output_file_holds_the_same_document(capsys: pytest.CaptureFixture[str], project: Path,
                                             tmp_path: Path) -> None:
    target = tmp_path / "reports" / "devices.json"
    code, out, err = run(capsys, "devices", "list", "--json", "--output", str(target), "-c", str(project))
    assert code == 0
    assert document(out) == json.loads(target.read_text())
    assert [d["id"] for d in document(out)["devices"]] == ["v1", "v2"]
    code, out, err = run(capsys, "devices", "list", "-o", str(target), "-c", str(project))
    assert code == 0
    assert "v1" in out, "human output on stdout"
    assert f"report written to {target}" in err
    assert json.loads(target.read_text())["count"] == 2


def test_certs_check_times_are_iso_utc_with_the_epoch(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert run(capsys, "certs", "generate", "-c", str(project))[0] == 0
    code, out, _ = run(capsys, "certs", "check", "--json", "-c", str(project))
    assert code == 0
    report = document(out)
    assert report["ok"] is True
    cert = report["certificates"][0]
    assert ISO.match(cert["not_after"]), cert["not_after"]
    assert isinstance(cert["not_after_epoch"], float)
    (project.parent / "certs" / "clients" / "v1.pem").unlink()
    code, out, err = run(capsys, "certs", "check", "--json", "-c", str(project))
    assert code == 1
    assert document(out)["needing_attention"] == 1
    assert "need attention" in err


def test_doctor_json_and_its_exit_code_agree(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "doctor", "--json", "-c", str(project))
    report = document(out)
    assert code == (0 if report["ready"] else 1)
    assert {c["area"] for c in report["checks"]} >= {"python", "mosquitto"}


def test_ps_lists_recorded_stacks(capsys: pytest.CaptureFixture[str], project: Path, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "ps", "--json")
    assert code == 0
    assert document(out) == {"stacks": []}
    from ecokit.machine import StackIndex, new_entry

    StackIndex(tmp_path / "state").record(new_entry(stack="test", project_dir=project.parent, config_file=project,
                                                    runtime="local", profile="tls"))
    assert document(run(capsys, "ps", "--json")[1]) == {"stacks": []}, "stopped stacks only with --all"
    code, out, _ = run(capsys, "ps", "--all", "--json")
    (row,) = document(out)["stacks"]
    assert (row["stack"], row["state"], row["profile"]) == ("test", "stopped", "tls")
    assert ISO.match(row["started_at"])
    assert row["endpoints"]["mqtt"].startswith("mqtt://127.0.0.1:")
    project.unlink()
    assert document(run(capsys, "ps", "--all", "--json")[1]) == {"stacks": []}, "a deleted project is forgotten"


@pytest.mark.parametrize(("args", "code", "message", "hint"), [
    (["query", "status"], 2, "'status' is not an InfluxQL statement", "ecokit query -m status"),
    (["query", "DROP MEASUREMENT x; nonsense"], None, None, None),
    (["shadow", "get", "veh/1"], 2, "'veh/1' is not a thing name", "device id"),
    (["shadow", "update", "v1", "--name", "a/b", "--desired", "{}"], 2, "'a/b' is not a shadow name", None),
    (["command", "send", "veh+1", "ping"], 2, "'veh+1' is not a vehicle id: it contains '+'", "--all"),
    (["logs", "nope"], 2, "has no service 'nope'", "broker, influxdb"),
    (["conformance", "--area", "bogus"], 2, "'bogus' is not a spec area", "CONNECT/CONNACK"),
    (["conformance", "--broker", "ftp://host"], 2, "the scheme must be one of", "mqtt://"),
    (["conformance", "--broker", "mqtt://127.0.0.1:1"], 1, "cannot reach the broker at mqtt://127.0.0.1:1",
     "is it running"),
    (["query"], 1, "stack 'test' is not up", "ecokit up"),
    (["replay", "--since", "1m"], 1, "stack 'test' is not up", "ecokit up"),
])
def test_user_errors_are_one_red_line_with_a_hint(capsys: pytest.CaptureFixture[str], project: Path,
                                                  args: list[str], code: int | None, message: str | None,
                                                  hint: str | None) -> None:
    got, _, err = run(capsys, *args, "-c", str(project)) if args[0] != "conformance" or "--area" in args \
        else run(capsys, *args)
    assert "Traceback" not in err
    if code is None:  # a statement-looking one goes to InfluxDB (not up here): no usage error
        assert got == 1
        return
    assert got == code, err
    assert message is not None
    assert message in err
    if hint:
        assert "hint:" in err
        assert hint in err.split("hint:", 1)[1]
    with_json = run(capsys, *args, "--json", "-c", str(project)) if args[0] != "conformance" or "--area" in args \
        else run(capsys, *args, "--json")
    if args[:1] != ["logs"] and args[:2] != ["shadow", "get"] and args[:2] != ["shadow", "update"] \
            and args[:1] != ["command"]:
        error = document(with_json[1])["error"]
        assert message in error["message"]
        assert with_json[0] == code


def test_no_project_is_an_error_with_a_hint_and_a_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "--json")
    assert code == 1
    error = document(out)["error"]
    assert error["type"] == "ConfigError"
    assert "no ecokit.yaml" in error["message"]
    assert "ecokit init" in error["hint"]
    assert "hint: run `ecokit init`" in err


def test_output_off_a_terminal_is_not_cut_to_80_columns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    long_ids = [f"vehicle-with-a-rather-long-identifier-{n:04d}-{'x' * 20}" for n in range(3)]
    config = write_project(tmp_path / "p" / ("deeply-nested-folder-" * 3), devices=long_ids)
    code, out, _ = run(capsys, "devices", "list", "-c", str(config))
    assert code == 0
    for device_id in long_ids:
        line = next(line for line in out.splitlines() if device_id in line)
        assert len(line) > 80
    assert "…" not in out


def test_conformance_list_by_area(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "conformance", "--list", "--json", "--area", "TLS")
    assert code == 0
    assert [c["name"] for c in document(out)["checks"]] == ["tls_server_certificate_verified",
                                                            "mtls_client_certificate_required"]
