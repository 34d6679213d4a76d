"""The console's rendered config file (``console.json``): its part of the typed contract
between the plan and ecokit's services (``ecokit.contract``). ``ecokit/services/console.py``
builds it; the service validates it at start, so a bad file fails naming the key at fault."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ecokit.config.console import ConsoleConfig
from ecokit.contract import Contract, InfluxSettings, ServiceConfig, load_service_config


class HistorySource(Contract):
    """Where telemetry lands: the measurement of the rule storing ``fleet/+/telemetry`` and
    the tag holding the vehicle id; ``measurement`` None when no rule stores it."""

    measurement: str | None = "telemetry"
    tag: str = "vehicle"


class Registry(Contract):
    file: str = Field(description="devices.json beside console.json; re-read on SIGHUP and when it changes")


class GeofenceFile(Contract):
    """The stack's geofence file: the one the processor watches. ``writable`` False where the
    console only holds a copy (in docker: `ecokit geofences import` changes the project's file)."""

    path: str | None = None
    writable: bool = True


class ConsoleServiceConfig(ServiceConfig):
    influx: InfluxSettings
    token: str = Field(min_length=16, repr=False)
    database: str = Field(description="SQLite file of the command lifecycle")
    devices: Registry
    bridge_metrics: str | None = Field(None, description="the bridge's /metrics URL (None: no bridge)")
    history: HistorySource = HistorySource()
    geofences: GeofenceFile = GeofenceFile()
    settings: ConsoleConfig = ConsoleConfig()


def load_console_config(path: str | Path) -> ConsoleServiceConfig:
    return load_service_config(path, ConsoleServiceConfig)
