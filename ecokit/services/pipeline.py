"""The telemetry pipeline's services: the bridge (MQTT → InfluxDB, when the broker is not
EMQX), the fleet processor, and the EMQX rules that replace the bridge on EMQX.

Each ecokit service reads one rendered JSON file (0600: it holds credentials) whose path
is its only argument.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Literal

from ecokit.acl import BRIDGE_USER, PROCESSOR_USER
from ecokit.bridge.contract import BridgeServiceConfig
from ecokit.contract import InfluxSettings
from ecokit.processor.contract import GeofenceWatch, ProcessorServiceConfig
from ecokit.rules.emqx import EmqxPipeline, emqx_pipeline
from ecokit.services.context import INFLUX_READER, INFLUX_TOKEN, INFLUX_WRITER, PlanContext
from ecokit.services.influxdb import INFLUXDB, influx_version
from ecokit.services.python_service import CONTAINER_CONFIG, http_listen, mqtt_target, python_service
from ecokit.services.spec import RenderedFile, ServiceSpec, Volume

BRIDGE = "bridge"
PROCESSOR = "processor"
GEOFENCES_FILE = "geofences.geojson"
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
    """The fleet processor: status to fleet/{id}/status, geofence events, alerts."""
    cfg = ctx.config
    if not cfg.processor.enabled:
        return None
    # Locally the processor watches the project's file itself (an edit counts within
    # `reload_interval`); in a container it watches the copy `ecokit up` delivers.
    fences_path = (ctx.geofences_file if ctx.target == "local" and ctx.geofences_file
                   else f"{CONTAINER_CONFIG}/{PROCESSOR}/{GEOFENCES_FILE}")
    watch = GeofenceWatch(path=fences_path, min_inside_s=cfg.geofences.min_inside_s,
                          min_outside_s=cfg.geofences.min_outside_s, reload_interval=cfg.geofences.reload_interval)
    config = ProcessorServiceConfig(
        service=PROCESSOR, stack=cfg.stack, mqtt=mqtt_target(ctx, PROCESSOR_USER), processor=cfg.processor,
        geofences=watch, alerts=cfg.alerts, http=http_listen(ctx, PROCESSOR, cfg.service_ports.processor))
    spec = python_service(ctx, PROCESSOR, module="ecokit.processor", port=cfg.service_ports.processor,
                          description="ecokit fleet processor: status, geofence events, alerts",
                          config=config, depends_on=("broker", INFLUXDB))
    fences = RenderedFile(GEOFENCES_FILE, ctx.geofences, f"{CONTAINER_CONFIG}/{PROCESSOR}/{GEOFENCES_FILE}")
    return replace(spec, files=(*spec.files, fences), reload_signal="SIGHUP", reloadable=(GEOFENCES_FILE,))
