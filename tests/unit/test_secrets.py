"""SecretStore: generated once, stable, 0600/0700, refuses a readable file, safe under
concurrent writers (threads and processes)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ecokit.errors import SecretsError
from ecokit.resources import package_root
from ecokit.secrets import SecretStore, generate_password, generate_token
from ecokit.stack import Stack
from ecokit.testing import write_project


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_generated_once_and_then_stable(tmp_path: Path) -> None:
    path = tmp_path / "stack" / "secrets.json"
    first = SecretStore(path).get("influxdb/admin")
    assert len(first) == 24
    assert SecretStore(path).get("influxdb/admin") == first, "a new store reads the stored value"
    assert SecretStore(path).get("other") != first


def test_ensure_creates_only_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    store = SecretStore(path)
    a = store.get("a")
    got = SecretStore(path).ensure({"a": generate_password, "b": generate_token})
    assert got["a"] == a
    assert set(json.loads(path.read_text())) == {"a", "b"}


def test_secrets_file_is_0600_and_its_folder_0700(tmp_path: Path) -> None:
    path = tmp_path / ".ecokit" / "s" / "secrets.json"
    SecretStore(path).get("x")
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert not list(path.parent.glob("*.tmp")), "no temporary file left behind"


def test_an_existing_loose_folder_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    SecretStore(folder / "secrets.json").get("x")
    assert mode(folder) == 0o700


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o666])
def test_a_secrets_file_readable_by_others_is_refused_with_a_chmod_hint(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "secrets.json"
    SecretStore(path).get("x")
    os.chmod(path, loose)
    with pytest.raises(SecretsError) as info:
        SecretStore(path).get("x")
    assert str(path) in str(info.value)
    assert f"{loose:o}" in str(info.value)
    assert info.value.hint == f"run: chmod 600 {path}"


def test_a_corrupt_secrets_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(SecretsError, match="cannot be read"):
        SecretStore(path).get("x")


def test_generated_secrets_need_no_quoting_anywhere() -> None:
    # They end up in HOCON, CSV, mosquitto password lines, URLs and shell commands.
    for _ in range(200):
        value = generate_password()
        assert not set(value) & set(":\"'\\$,#%/ \n")
    assert len({generate_password() for _ in range(100)}) == 100


def test_peek_does_not_create(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    assert SecretStore(path).peek("x") is None
    assert not path.exists()


def test_concurrent_threads_agree_on_every_secret(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    names = [f"device/v{i}" for i in range(20)]
    results: list[dict[str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            store = SecretStore(path)
            barrier.wait()
            results.append({name: store.get(name) for name in names})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(results) == 8
    assert all(r == results[0] for r in results)
    assert json.loads(path.read_text()) == results[0]


WRITER = """
import json, sys
from pathlib import Path
from ecokit.secrets import SecretStore, generate_password
store = SecretStore(Path(sys.argv[1]))
names = [f"s{i}" for i in range(30)]
print(json.dumps(store.ensure({n: generate_password for n in names[::2]}) |
                 {n: store.get(n) for n in names}))
"""


def test_concurrent_processes_agree_on_every_secret(tmp_path: Path) -> None:
    path = tmp_path / "stack" / "secrets.json"
    env = {**os.environ, "PYTHONPATH": str(package_root())}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env) for _ in range(6)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        outputs.append(json.loads(out))
    assert all(o == outputs[0] for o in outputs)
    assert json.loads(path.read_text()) == outputs[0]
    assert mode(path) == 0o600


def test_stack_secrets_cover_every_principal_and_survive_reloads(tmp_path: Path) -> None:
    project = write_project(tmp_path, devices=["v1", "v2"], users=[{"username": "app"},
                                                                  {"username": "ops", "password": "given-password"}])
    values = Stack.load(project, env={}).secret_values()
    for name in ("hash-seed", "influxdb/admin", "influxdb/writer", "influxdb/reader", "influxdb/token",
                 "emqx/cookie", "service/ecokit-admin", "service/ecokit-health", "device/v1", "device/v2",
                 "user/app"):
        assert values[name]
    assert "user/ops" not in values, "a password given in the registry is not generated"
    again = Stack.load(project, env={})
    assert again.secret_values() == values
    assert again.device_credentials("v1") == ("v1", values["device/v1"])
    assert again.service_credentials("ecokit-admin") == ("ecokit-admin", values["service/ecokit-admin"])


def test_a_password_in_the_registry_wins_over_a_generated_one(tmp_path: Path) -> None:
    project = write_project(tmp_path, devices=["v1"])
    (tmp_path / "config" / "devices.yaml").write_text("devices:\n  - id: v1\n    password: from-registry\n")
    assert Stack.load(project, env={}).device_credentials("v1") == ("v1", "from-registry")


def test_a_group_traverse_only_folder_keeps_its_group_bit(tmp_path: Path) -> None:
    # What a local broker that drops root to its own user needs (ecokit.runtime.privileges).
    folder = tmp_path / "s"
    folder.mkdir(mode=0o710)
    os.chmod(folder, 0o710)
    SecretStore(folder / "secrets.json").get("x")
    assert mode(folder) == 0o710
    os.chmod(folder, 0o750)
    SecretStore(folder / "secrets.json").get("y")
    assert mode(folder) == 0o700
