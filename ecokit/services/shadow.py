"""The shadow service in the plan: ecokit's own Python process (or the ecokit image)."""

from __future__ import annotations

from ecokit.acl import SHADOW_USER
from ecokit.services.context import PlanContext
from ecokit.services.python_service import http_listen, mqtt_target, python_service
from ecokit.services.spec import ServiceSpec, Volume
from ecokit.shadow.contract import ShadowMqtt, ShadowServiceConfig

SHADOW = "shadow"
CONTAINER_DATA = "/ecokit/data"


def shadow_config(ctx: PlanContext) -> ShadowServiceConfig:
    """The service's config file: broker connection (with its credentials), database, HTTP."""
    cfg = ctx.config
    mqtt = mqtt_target(ctx, SHADOW_USER, client_id=f"ecokit-shadow-{cfg.stack}")
    return ShadowServiceConfig(
        stack=cfg.stack, mqtt=ShadowMqtt.model_validate(mqtt.model_dump()),
        database=f"{ctx.paths.volume(SHADOW, 'data', CONTAINER_DATA)}/shadows.sqlite3",
        http=http_listen(ctx, SHADOW, cfg.service_ports.shadow))


def shadow(ctx: PlanContext) -> ServiceSpec:
    return python_service(ctx, SHADOW, module="ecokit.shadow.service", port=ctx.config.service_ports.shadow,
                          description="ecokit device shadow service", config=shadow_config(ctx),
                          volumes=(Volume("data", CONTAINER_DATA),))
