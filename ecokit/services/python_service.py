"""ecokit's own services in the plan: a Python module run with the rendered JSON config
file (0600: it holds credentials) as its only argument, locally or in the ecokit image."""

from __future__ import annotations

import json
from typing import Any

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

CONTAINER_CONFIG = "/ecokit/config"


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


def http_listen(ctx: PlanContext, name: str, port: int) -> dict[str, Any]:
    """Where the service serves /metrics, /healthz and /readyz."""
    return {"host": ctx.listen_host(), "port": ctx.listen_port(name, port)}


def python_service(ctx: PlanContext, name: str, *, module: str, port: int, description: str,
                   config: dict[str, Any], volumes: tuple[Volume, ...] = (),
                   depends_on: tuple[str, ...] = ("broker",)) -> ServiceSpec:
    filename = f"{name}.json"
    content = json.dumps(config, indent=2, sort_keys=True).encode() + b"\n"
    container_file = f"{CONTAINER_CONFIG}/{name}/{filename}"
    return ServiceSpec(
        name=name, role="ecokit", description=description,
        files=(RenderedFile(filename, content, container_file, secret=True),),
        ports=(PortSpec("http", ctx.listen_port(name, port), port, "http"),),
        probe=Probe("http", "http", path="/readyz", expect=(200,), timeout=30.0),
        health=Probe("http", "http", path="/healthz", expect=(200,), timeout=3.0),
        depends_on=depends_on, volumes=volumes,
        local=LocalCommand(module, (ctx.paths.file(name, filename),), python=True),
        container=ContainerSpec(ctx.config.images.ecokit, command=("python", "-m", module, container_file),
                                aliases=(name,)),
    )
