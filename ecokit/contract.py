"""The typed contract between the plan and ecokit's own services.

Each of ecokit's Python services (bridge, processor, shadow, and the next ones) reads one
rendered JSON file. Its shape is a pydantic model that lives beside the service, in
``ecokit/<service>/contract.py``, and derives from :class:`ServiceConfig`; the plan side
(``ecokit/services/``) builds that model and renders it (:meth:`Contract.render`), the
service validates the file at start (:func:`load_service_config`), so a bad or stale file
fails at once with the key at fault instead of a ``KeyError`` deep in a callback.

The parts every service shares: where its broker is and as whom (:class:`MqttSettings`),
where it serves /metrics /healthz /readyz (:class:`HttpListen`), and for services that write
or read InfluxDB, :class:`InfluxSettings`.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecokit.errors import ConfigError
from ecokit.mqtt.tls import tls_context
from ecokit.store.influx import InfluxEndpoint


class Contract(BaseModel):
    """A part of a service's config file: unknown keys refused, frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def render(self) -> bytes:
        """The file's bytes: stable (sorted keys) so unchanged settings keep the fingerprint."""
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True),
                          indent=2, sort_keys=True).encode() + b"\n"


class MqttSettings(Contract):
    """How a service connects to the stack's broker: plain on the stack's network, or TLS
    with the stack CA (and its own certificate under mutual TLS)."""

    host: str
    port: int = Field(ge=1, le=65535)
    username: str
    password: str = Field(repr=False)
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    client_id: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for this connection (None for plain MQTT)."""
        if not self.tls:
            return None
        return tls_context(self.ca, certfile=self.cert, keyfile=self.key)


class HttpListen(Contract):
    """Where a service serves /metrics, /healthz and /readyz (port 0: any free port)."""

    host: str
    port: int = Field(ge=0, le=65535)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class InfluxSettings(Contract):
    """How a service reaches InfluxDB's v1 API: a user and password (1.x) or a token (2.x)."""

    url: str
    database: str
    version: Literal[1, 2] = 1
    username: str | None = None
    password: str | None = Field(None, repr=False)
    token: str | None = Field(None, repr=False)

    def endpoint(self) -> InfluxEndpoint:
        return InfluxEndpoint(self.url, self.database, username=self.username, password=self.password,
                              token=self.token, version=self.version)


class ServiceConfig(Contract):
    """What every service's config file has; a service's own model adds its sections."""

    stack: str = "ecokit"
    mqtt: MqttSettings
    http: HttpListen


Config = TypeVar("Config", bound=ServiceConfig)


def load_service_config(path: str | Path, model: type[Config]) -> Config:
    """Read and validate a service's rendered config file; ConfigError names the file and key."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("service config file not found", source=str(path)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"not JSON: {exc}", source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("must be a JSON object", source=str(path))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = "required key is missing" if first["type"] == "missing" else \
            "unknown key" if first["type"] == "extra_forbidden" else str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(message + more, source=str(path), key=key) from None
