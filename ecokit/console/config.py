"""The console's rendered config file (``console.json``): a typed contract between the plan
(``ecokit/services/console.py`` builds it) and the service (validates it at start).

A file that does not match fails at start with the key at fault, before anything connects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecokit.config.console import ConsoleConfig
from ecokit.daemon import load_service_config
from ecokit.errors import ConfigError


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTarget(_Contract):
    """How the console reaches the broker, as its own user ``ecokit-console``."""

    host: str
    port: int = Field(ge=1, le=65535)
    username: str
    password: str = Field(repr=False)
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class InfluxTarget(_Contract):
    """InfluxDB's v1 API with read rights (``ecokit-reader``, or the 2.x token)."""

    url: str
    database: str
    username: str | None = None
    password: str | None = Field(None, repr=False)
    token: str | None = Field(None, repr=False)
    version: Literal[1, 2] = 1


class HttpListen(_Contract):
    host: str
    port: int = Field(ge=1, le=65535)


class HistorySource(_Contract):
    """Where telemetry lands: the measurement of the rule storing ``fleet/+/telemetry`` and
    the tag holding the vehicle id; ``measurement`` None when no rule stores it."""

    measurement: str | None = "telemetry"
    tag: str = "vehicle"


class Registry(_Contract):
    """The device registry as the console sees it: ids and whether a client cert exists."""

    file: str = Field(description="devices.json beside console.json; re-read on SIGHUP and when it changes")


class ConsoleServiceConfig(_Contract):
    service: Literal["console"] = "console"
    stack: str
    mqtt: MqttTarget
    influx: InfluxTarget
    token: str = Field(min_length=16, repr=False)
    http: HttpListen
    database: str = Field(description="SQLite file of the command lifecycle")
    devices: Registry
    bridge_metrics: str | None = Field(None, description="the bridge's /metrics URL (None: no bridge)")
    history: HistorySource = HistorySource()
    settings: ConsoleConfig = ConsoleConfig()

    def mqtt_dict(self) -> dict[str, Any]:
        return self.mqtt.model_dump()


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_console_config(data: dict[str, Any], source: str) -> ConsoleServiceConfig:
    """Validate a loaded config; ConfigError names the first key at fault."""
    try:
        return ConsoleServiceConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{first['msg']}{more}", source=source, key=_key(tuple(first["loc"])) or None) from None


def load_console_config(path: str | Path) -> ConsoleServiceConfig:
    return parse_console_config(load_service_config(path), str(path))
