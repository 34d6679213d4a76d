"""The ``console`` section of ecokit.yaml: the fleet console (docs/console.md).

    console:
      port: 8080
      max_vehicles: 20000
      batch_interval_ms: 250
      tiles: {url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png", attribution: "© OpenStreetMap contributors"}
      history: {default_since: 1h, max_points: 500}
      commands: {timeout_s: 30, expires_s: 300}
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ecokit.durations import UNIT_SECONDS, duration_seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TilesConfig(_Section):
    """The map's tile layer. The page still shows markers (on a plain background) when the
    tiles cannot be reached, e.g. on an offline machine."""

    url: str = Field("https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                     description="tile URL template with {z}, {x}, {y} (and optionally {s}); "
                                 "empty: no tiles (markers on a plain background)")
    attribution: str = Field("© OpenStreetMap contributors", max_length=500)
    max_zoom: int = Field(19, ge=1, le=24)

    @field_validator("url")
    @classmethod
    def _template(cls, value: str) -> str:
        if value == "":
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        missing = [p for p in ("{z}", "{x}", "{y}") if p not in value]
        if missing:
            raise ValueError(f"{value!r} lacks {', '.join(missing)}")
        if any(ch in value for ch in " ;'\"\\"):
            raise ValueError(f"{value!r} contains a space, quote, ';' or backslash")
        return value

    @property
    def origin(self) -> str:
        """What the Content-Security-Policy must allow for images (``{s}`` subdomains too)."""
        if not self.url:
            return ""
        parts = urlsplit(self.url)
        host = parts.netloc.replace("{s}", "*")
        return f"{parts.scheme}://{host}"


class HistoryConfig(_Section):
    default_since: str = Field("1h", description="history range when a request gives no `since`")
    max_points: int = Field(500, ge=2, le=100_000, description="points per history answer by default")
    max_points_limit: int = Field(5000, ge=2, le=100_000, description="the most a request may ask for")

    @field_validator("default_since")
    @classmethod
    def _duration(cls, value: str) -> str:
        if duration_seconds(value, units=tuple(UNIT_SECONDS), bare=False) is None:
            raise ValueError(f"{value!r} is not a duration (30s, 15m, 1h, 2d)")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> HistoryConfig:
        if self.max_points > self.max_points_limit:
            raise ValueError(f"max_points ({self.max_points}) is above max_points_limit ({self.max_points_limit})")
        return self


class CommandsConfig(_Section):
    timeout_s: float = Field(30.0, gt=0, le=3600, description="sent → device ack, by default")
    expires_s: float = Field(300.0, ge=1, le=604_800, description="a queued command is dropped after this")
    max_fanout: int = Field(10_000, ge=1, le=1_000_000, description="vehicles one request may address")
    keep_days: float = Field(30.0, gt=0, le=3650, description="finished commands are kept this long")


class ConsoleConfig(_Section):
    """The fleet console: a live map, the HTTP API and the WebSocket stream."""

    enabled: bool = True
    port: int = Field(8080, ge=1, le=65535, description="page, API, stream and /metrics")
    bind: str | None = Field(None, description="listen address; default: the stack's `bind`")
    max_vehicles: int = Field(20_000, ge=1, le=1_000_000, description="last-known states kept (LRU)")
    batch_interval_ms: int = Field(250, ge=20, le=10_000, description="stream diffs at most this often")
    stats_interval_ms: int = Field(1000, ge=100, le=60_000)
    tiles: TilesConfig = TilesConfig()
    history: HistoryConfig = HistoryConfig()
    commands: CommandsConfig = CommandsConfig()

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address") from exc
        return value
