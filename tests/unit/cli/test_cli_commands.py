"""The `ecokit` command, driven through ecokit.cli.main (which returns the exit code)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from ecokit.cli import main
from ecokit.config.loader import load_config
from ecokit.config.model import StackConfig
from ecokit.stack import Stack
from ecokit.testing import write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", devices=["v1", "v2"])


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- exit codes and error output -------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["up", "--bogus"],
    ["logs", "--lines", "-1"],
    ["init", "--broker", "hivemq"],
    ["devices", "add"],
    ["init", "--devices", "-1"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert "Traceback" not in err
    assert "rror" in err


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 2
    assert "Usage" in out + err
    assert "init" in out + err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("init", "doctor", "render", "certs", "up", "status", "logs", "restart", "down", "devices"):
        assert command in out


def test_an_ecokit_error_is_one_red_line_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "nowhere.yaml"
    code, out, err = run(capsys, "status", "--config", str(missing))
    assert code == 1
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert error_lines == [f"Error: {missing}: file not found"]
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_the_error_line_is_red_on_a_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    import ecokit.cli

    screen = io.StringIO()
    monkeypatch.setattr(ecokit.cli, "err", Console(file=screen, force_terminal=True, color_system="standard",
                                                   highlight=False, width=200))
    assert main(["status", "--config", str(tmp_path / "elsewhere" / "nowhere.yaml")]) == 1
    [line] = screen.getvalue().strip().splitlines()
    assert line.startswith("\x1b[1;31mError:")
    assert "\x1b[31m" in line
    assert "file not found" in line


def test_an_error_with_a_hint_prints_the_hint_after_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status")
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("Error: no ecokit.yaml in ")
    assert lines[1] == "hint: run `ecokit init` to create one"
    assert len(lines) == 2


def test_a_config_error_names_file_and_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "ecokit.yaml").write_text("broker:\n  prots: {}\n")
    code, _, err = run(capsys, "render")
    assert code == 1
    assert err.strip() == "Error: ecokit.yaml: broker.prots: unknown key; did you mean 'ports'?"


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "status", "--debug", "--config", str(tmp_path / "nowhere.yaml"))
    assert code == 1
    assert "Traceback" in err
    assert "Error:" in err


def test_ecokit_debug_environment_variable_shows_the_traceback(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOKIT_DEBUG", "1")
    code, _, err = run(capsys, "status", "--config", str(tmp_path / "nowhere.yaml"))
    assert code == 1
    assert "Traceback" in err


# -- init --------------------------------------------------------------------------------------


def test_init_writes_the_three_files_and_a_gitignore(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "My Fleet"
    code, out, _ = run(capsys, "init", str(folder), "--devices", "3")
    assert code == 0
    for name in ("ecokit.yaml", "config/devices.yaml", "config/users.yaml"):
        assert (folder / name).is_file()
        assert str(folder / name) in out
    loaded = load_config(folder / "ecokit.yaml")
    assert loaded.config.stack == "my-fleet", "derived from the folder name"
    devices = yaml.safe_load((folder / "config" / "devices.yaml").read_text())["devices"]
    assert devices == [{"id": "vehicle-0001"}, {"id": "vehicle-0002"}, {"id": "vehicle-0003"}]
    assert yaml.safe_load((folder / "config" / "users.yaml").read_text()) == {"users": []}
    gitignore = (folder / ".gitignore").read_text().splitlines()
    assert ".ecokit/" in gitignore
    assert "certs/" in gitignore


def test_init_refuses_to_overwrite_without_force(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "init", str(tmp_path / "p"), "--devices", "1")[0] == 0
    config = tmp_path / "p" / "ecokit.yaml"
    config.write_text(config.read_text() + "# my edit\n")
    code, out, _ = run(capsys, "init", str(tmp_path / "p"), "--devices", "5")
    assert code == 0
    assert config.read_text().endswith("# my edit\n"), "kept"
    assert "kept" in out
    assert "--force" in out
    assert len(yaml.safe_load((tmp_path / "p" / "config" / "devices.yaml").read_text())["devices"]) == 1
    assert run(capsys, "init", str(tmp_path / "p"), "--devices", "5", "--force")[0] == 0
    assert "# my edit" not in config.read_text()
    assert len(yaml.safe_load((tmp_path / "p" / "config" / "devices.yaml").read_text())["devices"]) == 5
    assert (tmp_path / "p" / ".gitignore").read_text().count(".ecokit/") == 1


def test_init_port_offset_moves_every_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "init", str(tmp_path / "p"), "--port-offset", "20000", "--stack", "shifted")[0] == 0
    config = load_config(tmp_path / "p" / "ecokit.yaml").config
    defaults = StackConfig().host_ports()
    assert config.stack == "shifted"
    assert config.host_ports() == {key: port + 20000 for key, port in defaults.items()}


def test_init_with_emqx(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "init", str(tmp_path / "p"), "--broker", "emqx", "--devices", "0")[0] == 0
    assert load_config(tmp_path / "p" / "ecokit.yaml").config.broker.kind == "emqx"
    assert Stack.load(tmp_path / "p" / "ecokit.yaml", env={}).devices() == []


# -- render ------------------------------------------------------------------------------------


def test_render_lists_every_file(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "render", "--config", str(project))
    assert code == 0
    config_dir = project.parent / ".ecokit" / "test" / "config"
    assert str(config_dir) in out
    for service, name in (("broker", "mosquitto.conf"), ("broker", "passwd"), ("broker", "acl"),
                          ("influxdb", "influxdb.conf")):
        assert (config_dir / service / name).is_file()
        assert any(line.split()[:2] == [service, name] for line in out.splitlines()), name
    assert any(line.split()[1] == "passwd" and line.split()[-1] == "600" for line in out.splitlines()
               if len(line.split()) > 2)


def test_render_of_a_freshly_initialised_project_with_grafana_and_prometheus(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "init", str(tmp_path / "p"), "--port-offset", "30000")[0] == 0
    code, out, err = run(capsys, "render", "--config", str(tmp_path / "p" / "ecokit.yaml"), "--runtime", "local")
    assert code == 0, err
    assert "grafana" in out
    assert "prometheus" in out


def test_render_with_a_profile(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert run(capsys, "render", "--config", str(project), "--profile", "mtls")[0] == 0
    conf = (project.parent / ".ecokit" / "test" / "config" / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf


def test_render_with_an_unknown_profile_lists_the_known_ones(capsys: pytest.CaptureFixture[str],
                                                            project: Path) -> None:
    code, _, err = run(capsys, "render", "--config", str(project), "--profile", "nope")
    assert code == 1
    assert "unknown profile 'nope'" in err
    assert "known profiles: default, mtls, open, tls" in err


def test_profile_from_the_environment(capsys: pytest.CaptureFixture[str], project: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOKIT_PROFILE", "tls")
    monkeypatch.setenv("ECOKIT_BROKER__MAX_QUEUED_MESSAGES", "777")
    assert run(capsys, "render", "--config", str(project))[0] == 0
    conf = (project.parent / ".ecokit" / "test" / "config" / "broker" / "mosquitto.conf").read_text()
    assert "tls_version tlsv1.2" in conf
    assert "max_queued_messages 777" in conf


# -- devices -----------------------------------------------------------------------------------


def test_devices_add_and_list(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "devices", "add", "truck-1", "v1", "--config", str(project))
    assert code == 0
    assert "added 1" in out
    assert "truck-1" in out
    code, out, _ = run(capsys, "devices", "add", "--count", "2", "--prefix", "bus-", "--config", str(project))
    assert code == 0
    code, out, _ = run(capsys, "devices", "list", "--json", "--config", str(project))
    assert code == 0
    rows = json.loads(out)["devices"]
    assert [r["id"] for r in rows] == ["v1", "v2", "truck-1", "bus-0001", "bus-0002"]
    assert all("password" not in r for r in rows), "secrets only when asked for"
    assert {r["password_source"] for r in rows} == {"secrets"}


def test_devices_list_show_secrets(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "devices", "list", "--json", "--show-secrets", "--config", str(project))
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)["devices"]}
    stack = Stack.load(project, env={})
    assert rows["v1"]["password"] == stack.device_credentials("v1")[1]
    assert rows["v2"]["password"] == stack.device_credentials("v2")[1]


def test_devices_list_table_does_not_show_passwords(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "devices", "list", "--config", str(project))
    assert code == 0
    assert "v1" in out
    assert "v2" in out
    assert Stack.load(project, env={}).device_credentials("v1")[1] not in out


def test_devices_add_refuses_a_bad_id(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    before = (project.parent / "config" / "devices.yaml").read_text()
    code, _, err = run(capsys, "devices", "add", "fleet/evil", "--config", str(project))
    assert code != 0
    assert "Traceback" not in err
    assert "not a device id" in err
    assert (project.parent / "config" / "devices.yaml").read_text() == before


# -- certs, status, logs, doctor ---------------------------------------------------------------


def test_certs_generate_check_and_issue(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "certs", "generate", "--config", str(project))
    assert code == 0
    assert "created" in out
    code, out, _ = run(capsys, "certs", "check", "--config", str(project))
    assert code == 0
    assert "certificates valid" in out
    code, out, _ = run(capsys, "certs", "generate", "--config", str(project))
    assert "created 0" in out
    code, _, err = run(capsys, "certs", "issue", "nobody", "--config", str(project))
    assert code == 1
    assert "'nobody' is neither a registered device nor a service user" in err
    (project.parent / "certs" / "clients" / "v1.pem").unlink()
    code, out, err = run(capsys, "certs", "check", "--config", str(project))
    assert code == 1
    assert "need attention" in err
    code, out, _ = run(capsys, "certs", "issue", "v1", "--config", str(project))
    assert code == 0
    assert "issued" in out


def test_status_of_a_stack_that_is_not_up(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "status", "--json", "--config", str(project))
    assert code == 0
    status = json.loads(out)
    assert status["state"] == "stopped"
    assert status["runtime"] is None
    assert status["services"]["broker"]["state"] == "stopped"
    assert status["broker"]["endpoints"]["mqtt"].startswith("mqtt://127.0.0.1:")


def test_logs_of_a_service_without_a_log(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = run(capsys, "logs", "broker", "--config", str(project))
    assert code == 1
    assert err.startswith("Error: broker: has no log yet")


def test_down_of_a_stack_that_is_not_up(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "down", "--config", str(project))
    assert code == 0
    assert "was not running" in out


def test_restart_needs_a_running_stack(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = run(capsys, "restart", "--config", str(project))
    assert code == 1
    assert "is not up" in err


def test_doctor_reports_a_busy_port(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    port = Stack.load(project, env={}).config.broker.ports.mqtt
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        code, out, _ = run(capsys, "doctor", "--config", str(project))
    assert code == 1
    assert f"broker.ports.mqtt={port}" in out.replace("\n", "")
