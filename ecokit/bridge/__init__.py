"""The ecokit bridge: MQTT → rules → InfluxDB, for brokers without EMQX's rule engine.

Run as ``python -m ecokit.bridge <bridge.json>`` (the stack renders the file).
"""

from ecokit.bridge.service import Bridge, BridgeMetrics, subscription_filters

__all__ = ["Bridge", "BridgeMetrics", "subscription_filters"]
