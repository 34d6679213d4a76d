"""The broker metrics service's rendered config file (``brokerstats.json``)."""

from __future__ import annotations

from ecokit.contract import ServiceConfig


class BrokerStatsServiceConfig(ServiceConfig):
    service: str = "brokerstats"
