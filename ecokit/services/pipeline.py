"""The telemetry pipeline's services: the bridge (MQTT → InfluxDB, when the broker is not
EMQX), the fleet processor, and the EMQX rules that replace the bridge on EMQX.

Each ecokit service reads one rendered JSON file (0600: it holds credentials) whose path
is its only argument.
"""

from __future__ import annotations

import base64
from typing import Literal

from ecokit.acl import BRIDGE_USER, PROCESSOR_USER
from ecokit.bridge.contract import BridgeServiceConfig
from ecokit.contract import InfluxSettings
from ecokit.processor.contract import ProcessorServiceConfig
from ecokit.rules.emqx import EmqxPipeline, emqx_pipeline
from ecokit.services.context import INFLUX_READER, INFLUX_TOKEN, INFLUX_WRITER, PlanContext
from ecokit.services.influxdb import INFLUXDB, influx_version
from ecokit.services.python_service import http_listen, mqtt_target, python_service
from ecokit.services.spec import ServiceSpec, Volume

BRIDGE = "bridge"
PROCESSOR = "processor"
CONTAINER_DATA = "/var/lib/ecokit"


def influx_target(ctx: PlanContext, role: Literal["writer", "reader"]) -> InfluxSettings:
    """How a service of the stack reaches InfluxDB with ``role``'s rights (2.x: the stack token)."""
    cfg = ctx.config
    url = f"http://{ctx.service_host(INFLUXDB)}:{ctx.service_port('influxdb', cfg.influxdb.port)}"
    if influx_version(ctx) == 2:
        return InfluxSettings(url=url, database=cfg.influxdb.database, token=ctx.secret(INFLUX_TOKEN), version=2)
    return InfluxSettings(url=url, database=cfg.influxdb.database, username=f"ecokit-{role}",
                          password=ctx.secret(INFLUX_WRITER if role == "writer" else INFLUX_READER), version=1)


def influx_write_target(ctx: PlanContext) -> InfluxSettings:
    """How a service of the stack writes to InfluxDB (writer rights)."""
    return influx_target(ctx, "writer")


def emqx_rules_pipeline(ctx: PlanContext) -> EmqxPipeline:
    target = influx_write_target(ctx)
    if target.version == 2:
        authorization = f"Token {target.token}"
    else:
        basic = base64.b64encode(f"{target.username}:{target.password}".encode()).decode()
        authorization = f"Basic {basic}"
    return emqx_pipeline(ctx.config.rules, url=target.url, database=target.database, authorization=authorization)


def bridge_enabled(ctx: PlanContext) -> bool:
    """Whether the stack runs the bridge: for every broker but EMQX (whose rules do its work)."""
    return ctx.config.broker.kind != "emqx" and ctx.config.bridge.enabled


def bridge(ctx: PlanContext) -> ServiceSpec | None:
    """The ecokit bridge, for every broker but EMQX (whose rules do the same work)."""
    cfg = ctx.config
    if not bridge_enabled(ctx):
        return None
    config = BridgeServiceConfig(
        service=BRIDGE, stack=cfg.stack, mqtt=mqtt_target(ctx, BRIDGE_USER), influx=influx_write_target(ctx),
        rules=cfg.rules, bridge=cfg.bridge, spool_dir=ctx.paths.volume(BRIDGE, "spool", f"{CONTAINER_DATA}/spool"),
        http=http_listen(ctx, BRIDGE, cfg.service_ports.bridge))
    return python_service(ctx, BRIDGE, module="ecokit.bridge", port=cfg.service_ports.bridge,
                          description="ecokit bridge: MQTT → InfluxDB by the rules", config=config,
                          volumes=(Volume("spool", f"{CONTAINER_DATA}/spool"),), depends_on=("broker", INFLUXDB))


def processor(ctx: PlanContext) -> ServiceSpec | None:
    """The fleet processor: derived speed, last_seen, online/offline to fleet/{id}/status."""
    cfg = ctx.config
    if not cfg.processor.enabled:
        return None
    config = ProcessorServiceConfig(
        service=PROCESSOR, stack=cfg.stack, mqtt=mqtt_target(ctx, PROCESSOR_USER), processor=cfg.processor,
        http=http_listen(ctx, PROCESSOR, cfg.service_ports.processor))
    return python_service(ctx, PROCESSOR, module="ecokit.processor", port=cfg.service_ports.processor,
                          description="ecokit fleet processor: derived speed, last seen, online/offline",
                          config=config, depends_on=("broker", INFLUXDB))
