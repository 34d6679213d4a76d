"""The shadow service in the plan: ecokit's own Python process (or the ecokit image)."""

from __future__ import annotations

import json

from ecokit.services.context import PlanContext
from ecokit.services.spec import (
    ContainerSpec,
    LocalCommand,
    PortSpec,
    Probe,
    RenderedFile,
    ServiceSpec,
    Volume,
)

SHADOW = "shadow"
SHADOW_USER = "ecokit-shadow"
CONFIG_FILE = "shadow.json"


def shadow_config(ctx: PlanContext) -> dict[str, object]:
    """The service's config file: broker connection (with its credentials), database, HTTP."""
    cfg = ctx.config
    principal = next(p for p in ctx.policy.principals if p.username == SHADOW_USER)
    p = cfg.broker.ports
    broker: dict[str, object] = {
        "host": ctx.service_host("broker"), "username": principal.username, "password": principal.password,
        "client_id": f"ecokit-shadow-{cfg.stack}",
    }
    if ctx.plain_mqtt:
        broker["port"] = ctx.service_port("mqtt", p.mqtt)
    else:
        broker.update(port=ctx.service_port("mqtts", p.mqtts), tls=True, ca_file=ctx.paths.cert("ca.pem"))
        if cfg.tls.mtls:
            broker.update(cert_file=ctx.paths.cert(f"clients/{SHADOW_USER}.pem"),
                          key_file=ctx.paths.cert(f"clients/{SHADOW_USER}.key"))
    return {
        "stack": cfg.stack,
        "broker": broker,
        "database": f"{ctx.paths.volume(SHADOW, 'data', '/ecokit/data')}/shadows.sqlite3",
        "http_host": ctx.listen_host(),
        "http_port": ctx.listen_port(SHADOW, cfg.service_ports.shadow),
    }


def shadow(ctx: PlanContext) -> ServiceSpec:
    cfg = ctx.config
    port = PortSpec("http", ctx.listen_port(SHADOW, cfg.service_ports.shadow), cfg.service_ports.shadow, "http")
    content = json.dumps(shadow_config(ctx), indent=2, sort_keys=True).encode() + b"\n"
    config_path = ctx.paths.file(SHADOW, CONFIG_FILE)
    return ServiceSpec(
        name=SHADOW, role="ecokit", description="ecokit device shadow service",
        files=(RenderedFile(CONFIG_FILE, content, f"/ecokit/config/{SHADOW}/{CONFIG_FILE}", secret=True),),
        ports=(port,), probe=Probe("http", "http", path="/readyz", expect=(200,), timeout=30.0),
        depends_on=("broker",),
        volumes=(Volume("data", "/ecokit/data"),),
        local=LocalCommand("ecokit.shadow.service", (config_path,), python=True),
        container=ContainerSpec(cfg.images.ecokit,
                                command=("python", "-m", "ecokit.shadow.service",
                                         f"/ecokit/config/{SHADOW}/{CONFIG_FILE}"),
                                aliases=(SHADOW,)),
    )
