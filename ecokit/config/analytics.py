"""The ``analytics`` section of ecokit.yaml: the daily per-vehicle roll-up.

    analytics:
      daily:
        enabled: true
        measurement: fleet_daily   # where the daily rows go
        every: 15m                 # how often today's (and yesterday's) rows are recomputed
        moving_speed: 2            # km/h above which a minute counts as moving

``ecokit.analytics`` renders it to InfluxDB 1.x continuous queries and an InfluxDB 2.x
task, both created when the stack starts.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecokit.durations import duration_seconds


class DailyAnalyticsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    measurement: str = Field("fleet_daily", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    every: str = Field("15m", pattern=r"^[1-9]\d*(s|m|h)$",
                       description="how often the rows of today and yesterday are recomputed")
    moving_speed: float = Field(2.0, ge=0, le=100, description="km/h above which a minute counts as moving")

    @field_validator("every")
    @classmethod
    def _at_most_a_day(cls, value: str) -> str:
        if (duration_seconds(value) or 0) > 86_400:
            raise ValueError(f"{value!r}: at most 24h (the rows of today and yesterday are recomputed)")
        return value


class AnalyticsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: DailyAnalyticsConfig = DailyAnalyticsConfig()
