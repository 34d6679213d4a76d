"""`ecokit conformance` against real stacks: the project's running stack, and the bundled
Mosquitto it starts itself (held to the pinned expected failures)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ecokit.cli import main
from ecokit.stack import Stack


def test_the_running_stack_passes_with_a_table_by_area(running: Stack, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = str(running.loaded.config_file)
    junit = tmp_path / "reports" / "conformance.xml"
    code = main(["conformance", "-c", config, "--area", "QoS", "--area", "authorization", "--area", "TLS",
                 "--junit", str(junit)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    lines = captured.out.splitlines()
    assert any(line.startswith("broker: stack 'test'") for line in lines)
    header = next(line for line in lines if "spec area" in line)
    assert header.split() == ["spec", "area", "passed", "failed", "xfail", "skipped"]
    assert any(line.split()[:1] == ["QoS"] for line in lines)
    assert "could not run against this target (skipped):" in captured.out
    assert "conformance passed" in captured.out
    # Progress by area, off a terminal: a line as each area starts and ends.
    assert "QoS: 3 checks ..." in captured.err
    assert "authorization: " in captured.err
    suites = {s.get("name"): s for s in ET.parse(junit).getroot()}
    assert set(suites) == {"QoS", "authorization", "TLS"}
    assert suites["TLS"].get("skipped") == "2"
    assert suites["QoS"].get("failures") == "0"
    code = main(["conformance", "-c", config, "--check", "suback_reason_codes", "--json", "--output",
                 str(tmp_path / "report.json")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert [c["name"] for c in report["checks"]] == ["mqtt5_3_9_3_suback_reason_codes"]
    assert report["started_at"].endswith("Z")
    assert report["bundled"] is False


def test_the_bundled_broker_is_held_to_its_pinned_outcomes(capsys: pytest.CaptureFixture[str],
                                                           server_binaries: None) -> None:
    code = main(["conformance", "--bundled", "--check", "session_present", "--check", "denied_subscribe_gets_0x87",
                 "--check", "mtls_client_certificate_required", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    outcomes = {c["name"]: c["outcome"] for c in report["checks"]}
    assert outcomes == {"mqtt311_3_2_2_2_session_present_flag": "passed",
                        "mqtt5_3_9_3_denied_subscribe_gets_0x87": "xfail",
                        "mtls_client_certificate_required": "passed"}
    assert report["bundled"] is True
    assert "started by ecokit" in report["target"]


def test_a_failing_check_makes_the_command_exit_1(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    # A "restricted" user that may do everything: the authorization checks must fail.
    user, password = running.service_credentials("ecokit-admin")
    url = running.broker_endpoints()["mqtt"]
    code = main(["conformance", "--broker", url, "--username", user, "--password", password, "--restricted-username",
                 user, "--restricted-password", password, "--denied-topic", "anything/goes", "--check",
                 "denied_publish", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["passed"] is False
    assert report["totals"]["failed"] >= 1
    failed = [c for c in report["checks"] if c["outcome"] == "failed"]
    assert all("denied publish was delivered" in c["reason"] for c in failed)


def test_refused_credentials_end_the_run_in_one_line(running: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    url = running.broker_endpoints()["mqtt"].replace("mqtt://", "mqtt://ecokit-admin:wrong@")
    code = main(["conformance", "--broker", url, "--area", "QoS"])
    captured = capsys.readouterr()
    assert code == 1
    assert "refused the connection" in captured.err
    assert "hint: check the credentials" in captured.err
