"""The fleet console in the plan: ecokit's own Python process (or the ecokit image) with
its own broker user (``ecokit-console``), InfluxDB read rights and the console token.

Three rendered files: ``console.json`` (0600: credentials and the token; the contract in
``ecokit/console/contract.py``, validated by the service at start), ``devices.json`` (the
registry's ids) and ``geofences.geojson`` (the geofences, read in a container), both
reloadable, so `ecokit devices add` and `ecokit geofences import` reach a running console by
SIGHUP, without a restart.
"""

from __future__ import annotations

import dataclasses
import json

from ecokit.acl import CONSOLE_USER
from ecokit.console.contract import ConsoleServiceConfig, GeofenceFile, HistorySource, Registry
from ecokit.contract import HttpListen
from ecokit.services.context import CONSOLE_TOKEN, PlanContext
from ecokit.services.influxdb import INFLUXDB
from ecokit.services.pipeline import BRIDGE, GEOFENCES_FILE, bridge_enabled, influx_target
from ecokit.services.python_service import CONTAINER_CONFIG, mqtt_target, python_service
from ecokit.services.spec import RenderedFile, ServiceSpec, Volume

CONSOLE = "console"
CONTAINER_DATA = "/ecokit/data"
DEVICES_FILE = "devices.json"
TELEMETRY_TOPIC = "fleet/+/telemetry"


def history_source(ctx: PlanContext) -> HistorySource:
    """The measurement and vehicle tag of the rule that stores telemetry (None: no history)."""
    for rule in ctx.config.rules.values():
        if rule.enabled and rule.topic == TELEMETRY_TOPIC:
            tag = next((name for name, spec in rule.tags.items()
                        if spec.from_ == "topic" and spec.segment == 2), "vehicle")
            return HistorySource(measurement=rule.measurement, tag=tag)
    return HistorySource(measurement=None)


def console_listen(ctx: PlanContext) -> HttpListen:
    cfg = ctx.config
    host = (cfg.console.bind or cfg.bind) if ctx.target == "local" else "0.0.0.0"
    return HttpListen(host=host, port=ctx.listen_port(CONSOLE, cfg.console.port))


def console_config(ctx: PlanContext) -> ConsoleServiceConfig:
    cfg = ctx.config
    bridge_metrics = None
    if bridge_enabled(ctx):
        port = ctx.listen_port(BRIDGE, cfg.service_ports.bridge)
        bridge_metrics = f"http://{ctx.service_host(BRIDGE)}:{port}/metrics"
    return ConsoleServiceConfig(
        stack=cfg.stack, mqtt=mqtt_target(ctx, CONSOLE_USER), http=console_listen(ctx),
        influx=influx_target(ctx, "reader"), token=ctx.secret(CONSOLE_TOKEN),
        database=f"{ctx.paths.volume(CONSOLE, 'data', CONTAINER_DATA)}/commands.sqlite3",
        devices=Registry(file=ctx.paths.file(CONSOLE, DEVICES_FILE)), bridge_metrics=bridge_metrics,
        history=history_source(ctx), geofences=geofence_file(ctx), settings=cfg.console)


def geofence_file(ctx: PlanContext) -> GeofenceFile:
    """Locally the console edits the project's own geofence file (the processor watches it);
    in a container it reads the copy `ecokit up` delivers, and cannot write the project's."""
    if ctx.target == "local" and ctx.geofences_file:
        return GeofenceFile(path=ctx.geofences_file, writable=True)
    return GeofenceFile(path=f"{CONTAINER_CONFIG}/{CONSOLE}/{GEOFENCES_FILE}", writable=False)


def devices_document(ctx: PlanContext) -> bytes:
    cert = ctx.config.tls.enabled  # `up` issues every device a client certificate when TLS is on
    devices = sorted(p.username for p in ctx.policy.principals if p.kind == "device")
    return json.dumps({"devices": [{"id": d, "client_cert": cert} for d in devices]},
                      separators=(",", ":")).encode() + b"\n"


def console(ctx: PlanContext) -> ServiceSpec | None:
    cfg = ctx.config
    if not cfg.console.enabled:
        return None
    spec = python_service(ctx, CONSOLE, module="ecokit.console", port=cfg.console.port,
                          description="ecokit fleet console: live map, HTTP API, WebSocket stream",
                          config=console_config(ctx), volumes=(Volume("data", CONTAINER_DATA),),
                          depends_on=("broker", INFLUXDB))
    devices = RenderedFile(DEVICES_FILE, devices_document(ctx), f"{CONTAINER_CONFIG}/{CONSOLE}/{DEVICES_FILE}")
    fences = RenderedFile(GEOFENCES_FILE, ctx.geofences, f"{CONTAINER_CONFIG}/{CONSOLE}/{GEOFENCES_FILE}")
    return dataclasses.replace(spec, files=(*spec.files, devices, fences), reload_signal="SIGHUP",
                               reloadable=(DEVICES_FILE, GEOFENCES_FILE))
