"""The shadow service's rendered config file (``shadow.json``): broker connection with a
stable client id (its persistent session), SQLite database, HTTP listener."""

from __future__ import annotations

from pydantic import Field

from ecokit.contract import MqttSettings, ServiceConfig
from ecokit.shadow.machine import MAX_NAMED_SHADOWS


class ShadowMqtt(MqttSettings):
    client_id: str  # required: the persistent session belongs to it


class ShadowServiceConfig(ServiceConfig):
    mqtt: ShadowMqtt
    database: str
    session_expiry: int = 3600
    max_named_shadows: int = Field(MAX_NAMED_SHADOWS, ge=1)  # per thing; one more is refused with 400
