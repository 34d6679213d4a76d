"""The broker metrics service in the plan: Mosquitto's $SYS tree for Prometheus."""

from __future__ import annotations

from ecokit.acl import BROKERSTATS_USER
from ecokit.brokerstats.contract import BrokerStatsServiceConfig
from ecokit.services.context import PlanContext
from ecokit.services.python_service import http_listen, mqtt_target, python_service
from ecokit.services.spec import ServiceSpec

BROKERSTATS = "brokerstats"


def brokerstats(ctx: PlanContext) -> ServiceSpec | None:
    """Runs beside Mosquitto when Prometheus is on (EMQX exports its own metrics)."""
    cfg = ctx.config
    if cfg.broker.kind != "mosquitto" or not cfg.prometheus.enabled:
        return None
    config = BrokerStatsServiceConfig(
        stack=cfg.stack, mqtt=mqtt_target(ctx, BROKERSTATS_USER, client_id=f"ecokit-brokerstats-{cfg.stack}"),
        http=http_listen(ctx, BROKERSTATS, cfg.service_ports.brokerstats))
    return python_service(ctx, BROKERSTATS, module="ecokit.brokerstats", port=cfg.service_ports.brokerstats,
                          description="ecokit broker metrics: Mosquitto's $SYS for Prometheus", config=config)
