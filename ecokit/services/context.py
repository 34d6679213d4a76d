"""Everything a service definition needs to render its files: a pure value, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ecokit.acl import AccessPolicy
from ecokit.config.model import StackConfig
from ecokit.errors import RenderError
from ecokit.render import PathMap
from ecokit.services.spec import Target

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

# The usernames InfluxDB 1.x knows (2.x uses the operator token).
INFLUX_USERS = {"admin": INFLUX_ADMIN, "ecokit-writer": INFLUX_WRITER, "ecokit-reader": INFLUX_READER}

# Ports the services listen on inside their containers.
CONTAINER_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 8083, "wss": 8084, "dashboard": 18083,
                   "influxdb": 8086, "grafana": 3000, "prometheus": 9090}


@dataclass(frozen=True)
class Capabilities:
    """What the software that will run can do (detected for local binaries)."""

    websockets: bool = True
    influx_version: Literal[1, 2] = 1
    # Local services run as whoever runs ecokit; Mosquitto would otherwise switch from
    # root to a `mosquitto` user that cannot read the stack's 0600 files.
    run_as: str | None = None


@dataclass(frozen=True)
class PlanContext:
    config: StackConfig
    target: Target
    policy: AccessPolicy
    secrets: Mapping[str, str]
    paths: PathMap
    caps: Capabilities
    # The validated geofence file (its bytes, as ecokit writes them) and where the local
    # processor watches it; the docker processor gets a copy (reloadable, SIGHUP).
    geofences: bytes = b'{"type":"FeatureCollection","features":[\n]}\n'
    geofences_file: str | None = None

    def secret(self, name: str) -> str:
        try:
            return self.secrets[name]
        except KeyError:
            raise RenderError(f"secret {name!r} was not provided to the renderer") from None

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

    def service_host(self, service: str) -> str:
        """How one service reaches another: loopback locally, the service name in docker."""
        return self.client_host if self.target == "local" else service

    def service_port(self, name: str, host_port: int) -> int:
        """The port one service uses to reach another's port ``name``."""
        return self.listen_port(name, host_port)
