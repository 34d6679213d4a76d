"""Asking where the broker is does not build the world, and password hashes are computed once."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ecokit.services import broker
from ecokit.stack import Stack
from ecokit.testing import write_project


def test_endpoints_and_service_credentials_need_neither_plan_nor_registry(tmp_path: Path) -> None:
    config = write_project(tmp_path / "p", devices=3)
    stack = Stack.load(config, env={})
    endpoints = stack.broker_endpoints("local")
    reader = stack.influx_endpoint("reader", target="local")
    admin = stack.service_credentials("ecokit-admin")
    assert stack._plans == {}  # no plan built
    assert stack._devices is None  # the registry was not even read
    # ... and they are what the plan says.
    full = Stack.load(config, env={})
    spec = next(s for s in full.plan("local") if s.role == "broker")
    assert endpoints == {p.name: p.url("127.0.0.1") for p in spec.ports if p.scheme.startswith(("mqtt", "ws"))}
    assert reader == full.influx_endpoint("reader", target="local")
    assert admin == full.service_credentials("ecokit-admin")


def test_endpoints_follow_the_tls_profile_without_a_plan(tmp_path: Path) -> None:
    config = write_project(tmp_path / "p", extra={"tls": {"enabled": True, "plain_listener": False}})
    stack = Stack.load(config, env={})
    assert set(stack.broker_endpoints("local")) <= {"mqtts", "wss"}
    assert stack._plans == {}


def test_password_hashes_are_computed_once_and_kept_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_project(tmp_path / "p", devices=4)
    computed: list[str] = []
    real = broker.mosquitto_password_hash

    def counting(password: str, salt: bytes, iterations: int) -> str:
        computed.append(password)
        return real(password, salt, iterations)

    monkeypatch.setattr(broker, "mosquitto_password_hash", counting)
    first = Stack.load(config, env={})
    first.render("local")
    passwd = (first.paths.service_config("broker") / "passwd").read_bytes()
    users = len(passwd.splitlines())
    assert len(computed) == users
    cache = first.paths.root / "password-hashes.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert len(json.loads(cache.read_text())) == users

    computed.clear()
    again = Stack.load(config, env={})  # another command: a new process would do the same
    again.render("local")
    assert computed == []
    assert (again.paths.service_config("broker") / "passwd").read_bytes() == passwd

    # A device removed from the registry leaves the cache with the next render.
    devices = config.parent / "config" / "devices.yaml"
    devices.write_text(devices.read_text().replace("- id: vehicle-0004\n", ""))
    third = Stack.load(config, env={})
    third.render("local")
    assert computed == []
    assert len(json.loads(cache.read_text())) == users - 1


def test_a_changed_password_is_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_project(tmp_path / "p", devices=1)
    Stack.load(config, env={}).render("local")
    devices = config.parent / "config" / "devices.yaml"
    devices.write_text("devices:\n- id: vehicle-0001\n  password: a-new-password-1234\n")
    computed: list[str] = []
    real = broker.mosquitto_password_hash
    monkeypatch.setattr(broker, "mosquitto_password_hash",
                        lambda p, s, i: computed.append(p) or real(p, s, i))
    Stack.load(config, env={}).render("local")
    assert computed == ["a-new-password-1234"]
