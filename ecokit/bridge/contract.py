"""The bridge's rendered config file (``bridge.json``): the rules it evaluates, its own
settings, where it writes (InfluxDB, writer rights) and where it spools."""

from __future__ import annotations

from ecokit.config.rules import BridgeConfig, RuleConfig
from ecokit.contract import InfluxSettings, ServiceConfig


class BridgeServiceConfig(ServiceConfig):
    service: str = "bridge"
    influx: InfluxSettings
    rules: dict[str, RuleConfig]
    bridge: BridgeConfig = BridgeConfig()
    spool_dir: str
