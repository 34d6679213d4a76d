"""Everything a service definition needs to render its files: a pure value, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ecokit.acl import AccessPolicy
from ecokit.config.model import StackConfig
from ecokit.errors import RenderError
from ecokit.paths import Target
from ecokit.render import PathMap

# Names of the per-stack secrets. Devices and users are `device/<id>` and `user/<name>`,
# ecokit's own MQTT users `service/<username>`.
HASH_SEED = "hash-seed"
INFLUX_ADMIN = "influxdb/admin"
INFLUX_WRITER = "influxdb/writer"
INFLUX_READER = "influxdb/reader"
INFLUX_TOKEN = "influxdb/token"
GRAFANA_ADMIN = "grafana/admin"
GRAFANA_SECRET_KEY = "grafana/secret-key"
EMQX_COOKIE = "emqx/cookie"
EMQX_DASHBOARD = "emqx/dashboard"
EMQX_API_SECRET = "emqx/api-secret"
CONSOLE_TOKEN = "console/token"

# The usernames InfluxDB 1.x knows (2.x uses the operator token).
INFLUX_USERS = {"admin": INFLUX_ADMIN, "ecokit-writer": INFLUX_WRITER, "ecokit-reader": INFLUX_READER}

# Ports the services listen on inside their containers.
CONTAINER_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 8083, "wss": 8084, "dashboard": 18083, "internal": 1884,
                   "influxdb": 8086, "grafana": 3000, "prometheus": 9090}


@dataclass(frozen=True)
class Capabilities:
    """What the software that will run can do (detected for local binaries)."""

    websockets: bool = True
    influx_version: Literal[1, 2] = 1
    # The user Mosquitto runs as locally (its `user` option). Started by root it switches
    # to this user; `mosquitto` when the stack's files can be handed to it, else root
    # (and `drop_reason` says why). Started by anyone else it stays that user.
    run_as: str | None = None
    drops_privileges: bool = False
    drop_reason: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where the stack's services listen and how they reach each other: the configuration, the
    target and what its software can do. No secrets, no registry: asking where the broker
    is needs only this (building the plan hashes every password)."""

    config: StackConfig
    target: Target
    caps: Capabilities

    @property
    def plain_mqtt(self) -> bool:
        return self.config.tls.plain_listener or not self.config.tls.enabled

    @property
    def tls(self) -> bool:
        return self.config.tls.enabled

    @property
    def websockets(self) -> bool:
        mode = self.config.broker.websockets
        return mode == "on" or (mode == "auto" and self.caps.websockets)

    @property
    def client_host(self) -> str:
        """The address a client on this machine uses to reach the stack's ports."""
        bind = self.config.bind
        if bind in ("0.0.0.0", "::"):
            return "127.0.0.1"
        return bind

    def listen_port(self, name: str, host_port: int) -> int:
        """The port a service listens on: the host port locally, a fixed port in a container."""
        return host_port if self.target == "local" else CONTAINER_PORTS.get(name, host_port)

    def listen_host(self) -> str:
        return self.config.bind if self.target == "local" else "0.0.0.0"

    def internal_host(self) -> str:
        """Where the broker's internal listener binds: loopback on this machine; in a
        container every interface (the stack network), published on the host's loopback."""
        return "127.0.0.1" if self.target == "local" else "0.0.0.0"

    def service_host(self, service: str) -> str:
        """How one service reaches another: loopback locally, the service name in docker."""
        return self.client_host if self.target == "local" else service

    def service_port(self, name: str, host_port: int) -> int:
        """The port one service uses to reach another's port ``name``."""
        return self.listen_port(name, host_port)


@dataclass(frozen=True)
class PlanContext(Placement):
    """Everything the service builders need to render their files: a pure value, no I/O."""

    policy: AccessPolicy
    secrets: Mapping[str, str]
    paths: PathMap
    # Memoised password hashes (PBKDF2 is slow on purpose); the same bytes either way.
    hashes: PasswordHashes = field(default_factory=lambda: PasswordHashes())
    # The validated geofence file (its bytes, as ecokit writes them) and where the local
    # processor watches it; the docker processor gets a copy (reloadable, SIGHUP).
    geofences: bytes = b'{"type":"FeatureCollection","features":[\n]}\n'
    geofences_file: str | None = None

    def secret(self, name: str) -> str:
        try:
            return self.secrets[name]
        except KeyError:
            raise RenderError(f"secret {name!r} was not provided to the renderer") from None


class PasswordHashes:
    """Mosquitto password hashes, computed once: PBKDF2 costs ~0.5 ms per user by design, so
    10,000 devices cost seconds per plan. Keyed by an HMAC (under the stack's hash seed) of
    username, password and rounds; with ``path`` kept across processes in a 0600 file
    beside the stack's secrets (which hold the passwords themselves)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._known: dict[str, str] | None = None  # on disk, plus those computed since
        self._saved: dict[str, str] = {}  # what the file holds
        self._used: dict[str, str] = {}  # what the plans built since asked for

    def _load(self) -> dict[str, str]:
        if self._known is None:
            self._known = {}
            if self.path is not None:
                try:
                    data = json.loads(self.path.read_text())
                    self._known = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
                except (OSError, ValueError):
                    self._known = {}  # a lost or damaged cache only costs time
            self._saved = dict(self._known)
        return self._known

    def hash_all(self, seed: str, items: Sequence[tuple[str, str, int]],
                 compute: Callable[[str, str, int], str]) -> list[str]:
        """The hash of each (username, password, iterations), from the cache or computed; those not
        cached yet are computed on a few threads when there are many (PBKDF2 releases the GIL, so a
        first start with 10,000 new devices uses every core)."""
        known = self._load()
        keys = [self._key(seed, username, password, iterations) for username, password, iterations in items]
        missing = [(key, item) for key, item in zip(keys, items, strict=True) if key not in known]
        if len(missing) < 64:
            for key, item in missing:
                known[key] = compute(*item)
        else:
            workers = min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ecokit-hash") as pool:
                for (key, _), value in zip(missing, pool.map(lambda m: compute(*m[1]), missing), strict=True):
                    known[key] = value
        values = [known[key] for key in keys]
        self._used.update(zip(keys, values, strict=True))
        return values

    @staticmethod
    def _key(seed: str, username: str, password: str, iterations: int) -> str:
        return hmac.new(seed.encode(), f"{username}\0{password}\0{iterations}".encode(), hashlib.sha256).hexdigest()

    def save(self) -> None:
        """Keep the hashes the last plan used (users removed since are dropped), atomically, 0600."""
        if self.path is None or self._used == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._used, fh)
        os.replace(tmp, self.path)
        self._saved = dict(self._used)
