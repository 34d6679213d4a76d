"""The shadow service's rendered config file (``shadow.json``): broker connection with a
stable client id (its persistent session), SQLite database, HTTP listener."""

from __future__ import annotations

from ecokit.contract import MqttSettings, ServiceConfig


class ShadowMqtt(MqttSettings):
    client_id: str  # required: the persistent session belongs to it


class ShadowServiceConfig(ServiceConfig):
    mqtt: ShadowMqtt
    database: str
    session_expiry: int = 3600
