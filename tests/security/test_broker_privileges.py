"""A broker started by root runs as an unprivileged user (Mosquitto's `user`): a flaw in
the broker must not hand out root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.runtime.privileges import broker_user, closed_directory
from ecokit.runtime.probes import check_mqtt, tls_context
from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root can start a broker that drops root")


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A project folder other users can enter (pytest's own tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="ecokit-privileges-", dir="/tmp"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_broker_started_by_root_runs_as_mosquitto_and_still_reads_its_files(
        open_folder: Path, server_binaries: None) -> None:
    mosquitto = pwd.getpwnam("mosquitto")
    project = write_project(open_folder / "project", devices=["v1"])
    with running_stack(project, profile="tls") as stack:
        assert not [n for n in stack.notes if "runs as root" in n]
        pid = int(json.loads(stack.paths.state_file.read_text())["services"]["broker"]["pid"])
        assert process_uid(pid) == mosquitto.pw_uid
        # It read its password file, ACL and the server key as that user.
        ca = stack.cert_paths.ca_cert
        user, password = stack.device_credentials("v1")
        assert check_mqtt("127.0.0.1", stack.config.broker.ports.mqtts, username=user, password=password,
                          tls=tls_context(ca), timeout=5).ok
        assert stack.check_certs(), "the key readable by the broker's group still passes `certs check`"
        assert all(c.ok for c in stack.check_certs())
        # A registry change is re-read by that user on reload (files handed over again).
        (stack.devices_file).write_text("devices:\n  - v1\n  - v2\n")
        again = Stack.load(project, env={})
        again.generate_certs()
        assert again.up()["broker"] == "reloaded"
        user2, password2 = again.device_credentials("v2")
        assert check_mqtt("127.0.0.1", stack.config.broker.ports.mqtts, username=user2, password=password2,
                          tls=tls_context(ca), timeout=5).ok
        assert process_uid(pid) == mosquitto.pw_uid, "same process, still unprivileged"
        # Only the broker's group may traverse the stack folder holding secrets.json.
        mode = stack.paths.root.stat().st_mode & 0o777
        assert mode == 0o710
        assert stack.paths.root.stat().st_gid == mosquitto.pw_gid
        assert stack.paths.secrets_file.stat().st_mode & 0o777 == 0o600


def test_a_project_other_users_cannot_enter_keeps_root_and_says_why(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    assert closed_directory(closed / "project") in (closed, tmp_path, *tmp_path.parents)
    run_as = broker_user(closed / "project")
    assert (run_as.user, run_as.drops) == ("root", False)
    assert run_as.reason is not None
    assert "closed to other users" in run_as.reason
    stack = Stack.load(write_project(closed / "project", devices=1), env={})
    assert stack.plan_context("local").caps.run_as == "root"
    assert any("the broker runs as root" in n for n in stack.notes)
