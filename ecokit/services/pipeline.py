"""The telemetry pipeline's services: the bridge (MQTT → InfluxDB, when the broker is not
EMQX), the fleet processor, and the EMQX rules that replace the bridge on EMQX.

Each ecokit service reads one rendered JSON file (0600: it holds credentials) whose path
is its only argument.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ecokit.rules.emqx import EmqxPipeline, emqx_pipeline
from ecokit.services.context import INFLUX_TOKEN, INFLUX_WRITER, PlanContext
from ecokit.services.influxdb import INFLUXDB, influx_version
from ecokit.services.spec import (
    ContainerSpec,
    LocalCommand,
    PortSpec,
    Probe,
    RenderedFile,
    ServiceSpec,
    Volume,
)

BRIDGE = "bridge"
PROCESSOR = "processor"
CONTAINER_DATA = "/var/lib/ecokit"


def influx_write_target(ctx: PlanContext) -> dict[str, Any]:
    """How a service of the stack writes to InfluxDB (writer rights)."""
    cfg = ctx.config
    url = f"http://{ctx.service_host(INFLUXDB)}:{ctx.service_port('influxdb', cfg.influxdb.port)}"
    if influx_version(ctx) == 2:
        return {"url": url, "database": cfg.influxdb.database, "token": ctx.secret(INFLUX_TOKEN), "version": 2}
    return {"url": url, "database": cfg.influxdb.database, "username": "ecokit-writer",
            "password": ctx.secret(INFLUX_WRITER), "version": 1}


def emqx_rules_pipeline(ctx: PlanContext) -> EmqxPipeline:
    target = influx_write_target(ctx)
    if target["version"] == 2:
        authorization = f"Token {target['token']}"
    else:
        basic = base64.b64encode(f"{target['username']}:{target['password']}".encode()).decode()
        authorization = f"Basic {basic}"
    return emqx_pipeline(ctx.config.rules, url=target["url"], database=target["database"],
                         authorization=authorization)


def mqtt_target(ctx: PlanContext, username: str) -> dict[str, Any]:
    """How one of ecokit's services connects to the broker: plain on the stack network
    when the plain listener is on, else TLS with the stack CA (and its own cert for mTLS)."""
    cfg = ctx.config
    out: dict[str, Any] = {"host": ctx.service_host("broker"), "username": username,
                           "password": ctx.secret(f"service/{username}")}
    if ctx.plain_mqtt:
        out.update(port=ctx.service_port("mqtt", cfg.broker.ports.mqtt), tls=False)
    else:
        out.update(port=ctx.service_port("mqtts", cfg.broker.ports.mqtts), tls=True, ca=ctx.paths.cert("ca.pem"))
        if cfg.tls.mtls:
            out.update(cert=ctx.paths.cert(f"clients/{username}.pem"), key=ctx.paths.cert(f"clients/{username}.key"))
    return out


def _service(ctx: PlanContext, name: str, port: int, description: str, config: dict[str, Any],
             volumes: tuple[Volume, ...] = ()) -> ServiceSpec:
    http = PortSpec("http", ctx.listen_port(name, port), port, "http")
    filename = f"{name}.json"
    content = json.dumps(config, indent=2, sort_keys=True).encode() + b"\n"
    module = f"ecokit.{name}"
    return ServiceSpec(
        name=name, role="ecokit", description=description,
        files=(RenderedFile(filename, content, f"/ecokit/config/{name}/{filename}", secret=True),),
        ports=(http,), probe=Probe("http", "http", path="/readyz", expect=(200,), timeout=30.0),
        depends_on=("broker", INFLUXDB), volumes=volumes,
        local=LocalCommand(module, (ctx.paths.file(name, filename),), python=True),
        container=ContainerSpec(ctx.config.images.ecokit,
                                command=("python", "-m", module, f"/ecokit/config/{name}/{filename}"),
                                aliases=(name,)),
    )


def bridge(ctx: PlanContext) -> ServiceSpec | None:
    """The ecokit bridge, for every broker but EMQX (whose rules do the same work)."""
    cfg = ctx.config
    if cfg.broker.kind == "emqx" or not cfg.bridge.enabled:
        return None
    config = {
        "service": BRIDGE,
        "stack": cfg.stack,
        "mqtt": mqtt_target(ctx, "ecokit-bridge"),
        "influx": influx_write_target(ctx),
        "rules": {name: rule.model_dump(mode="json", by_alias=True) for name, rule in cfg.rules.items()},
        "bridge": cfg.bridge.model_dump(mode="json"),
        "spool_dir": ctx.paths.volume(BRIDGE, "spool", f"{CONTAINER_DATA}/spool"),
        "http": {"host": ctx.listen_host(), "port": ctx.listen_port(BRIDGE, cfg.service_ports.bridge)},
    }
    return _service(ctx, BRIDGE, cfg.service_ports.bridge, "ecokit bridge: MQTT → InfluxDB by the rules",
                    config, volumes=(Volume("spool", f"{CONTAINER_DATA}/spool"),))


def processor(ctx: PlanContext) -> ServiceSpec | None:
    """The fleet processor: derived speed, last_seen, online/offline to fleet/{id}/status."""
    cfg = ctx.config
    if not cfg.processor.enabled:
        return None
    config = {
        "service": PROCESSOR,
        "stack": cfg.stack,
        "mqtt": mqtt_target(ctx, "ecokit-processor"),
        "processor": cfg.processor.model_dump(mode="json"),
        "http": {"host": ctx.listen_host(), "port": ctx.listen_port(PROCESSOR, cfg.service_ports.processor)},
    }
    return _service(ctx, PROCESSOR, cfg.service_ports.processor,
                    "ecokit fleet processor: derived speed, last seen, online/offline", config)
