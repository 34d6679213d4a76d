"""Helpers for tests that need a real stack: free ports, throwaway projects, and a running
stack that is always torn down."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ecokit.scaffold import device_ids
from ecokit.stack import Stack

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now and not handed out before in this process.

    Chosen below the kernel's ephemeral range when there is room: a port from that range
    can be taken by any outgoing connection on the machine while a test's stack is down
    (between `down` and `up` again), and the service then fails to bind it.
    """
    low, _ = _ephemeral_range()
    with _ports_lock:
        if low - 10_000 >= 1024:
            rng = random.Random()
            for _ in range(500):
                port = rng.randrange(10_000, low)
                if port not in _handed_out and _bindable(host, port):
                    _handed_out.add(port)
                    return port
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port found")


def free_ports_overlay() -> dict[str, Any]:
    """Every host port a stack may bind (``StackConfig.host_ports``), each set to a free one."""
    from ecokit.config.model import StackConfig

    overlay: dict[str, Any] = {}
    for dotted in StackConfig().host_ports():
        *parents, last = dotted.split(".")
        node = overlay
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = free_port()
    return overlay


def project_config(*, stack: str = "test", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An ecokit.yaml body with every port free, local runtime, no Grafana."""
    cfg: dict[str, Any] = {"version": 1, "stack": stack, "runtime": "local", **free_ports_overlay()}
    _deep_update(cfg, {"grafana": {"enabled": False}, "prometheus": {"enabled": False}})
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(cfg.get(key), dict):
            _deep_update(cfg[key], value)
        else:
            cfg[key] = value
    return cfg


def _deep_update(target: dict[str, Any], overlay: Mapping[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def write_project(folder: Path, *, devices: int | list[str] = 3, stack: str = "test",
                  extra: Mapping[str, Any] | None = None, users: list[dict[str, Any]] | None = None) -> Path:
    """Create a project in ``folder``; returns the path of its ecokit.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ecokit.yaml"
    path.write_text(yaml.safe_dump(project_config(stack=stack, extra=extra), sort_keys=False))
    ids = device_ids(devices) if isinstance(devices, int) else devices
    (folder / "config").mkdir(exist_ok=True)
    (folder / "config" / "devices.yaml").write_text(yaml.safe_dump({"devices": [{"id": i} for i in ids]}))
    (folder / "config" / "users.yaml").write_text(yaml.safe_dump({"users": users or []}))
    return path


@contextlib.contextmanager
def running_stack(config_file: Path, *, profile: str | None = None, runtime: str = "local",
                  purge: bool = True) -> Iterator[Stack]:
    """Bring a stack up and always take it down again (purging its data by default)."""
    stack = Stack.load(config_file, profile=profile, env={})
    try:
        stack.up(runtime)
        yield stack
    finally:
        Stack.load(config_file, profile=profile, env={}).down(purge=purge)


WS_BROKER_DIR = Path.home() / ".cache" / "ecokit-tests" / "mosquitto-ws"


def ws_broker_binary(folder: Path = WS_BROKER_DIR) -> Path | None:
    """The Mosquitto with websockets that ``infra/ws-broker.sh`` builds for the test lane, if built.

    Put its folder first on PATH before a stack starts (with ``broker.websockets: on``) and the
    local runtime serves ws:// and wss:// with it."""
    binary = folder / "mosquitto"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None
