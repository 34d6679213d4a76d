"""The fleet processor's rendered config file (``processor.json``)."""

from __future__ import annotations

from pydantic import Field

from ecokit.config.alerts import AlertRule, GeofencesConfig
from ecokit.config.rules import ProcessorConfig
from ecokit.contract import Contract, ServiceConfig


class GeofenceWatch(Contract):
    """Which geofence file the processor watches, and the stack's default min times."""

    path: str | None = Field(None, description="the GeoJSON file (None: no geofences)")
    min_inside_s: float = Field(0.0, ge=0, le=86_400)
    min_outside_s: float = Field(0.0, ge=0, le=86_400)
    reload_interval: float = Field(1.0, ge=0.1, le=60)

    def defaults(self) -> GeofencesConfig:
        return GeofencesConfig(min_inside_s=self.min_inside_s, min_outside_s=self.min_outside_s,
                               reload_interval=self.reload_interval)


class ProcessorServiceConfig(ServiceConfig):
    service: str = "processor"
    processor: ProcessorConfig = ProcessorConfig()
    geofences: GeofenceWatch = GeofenceWatch()
    alerts: dict[str, AlertRule] = Field(default_factory=dict)
