"""ecokit's own services in the plan: a Python module run with the rendered JSON config
file (0600: it holds credentials) as its only argument, locally or in the ecokit image.

The file is the service's contract model (``ecokit/<service>/contract.py``, see
``ecokit.contract``), built here from the stack's configuration and validated again by the
service when it starts."""

from __future__ import annotations

from ecokit.contract import HttpListen, MqttSettings, ServiceConfig
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


def mqtt_target(ctx: PlanContext, username: str, *, client_id: str | None = None) -> MqttSettings:
    """How one of ecokit's services connects to the broker: plain on the stack network
    when the plain listener is on, else TLS with the stack CA (and its own cert for mTLS)."""
    cfg = ctx.config
    host, password = ctx.service_host("broker"), ctx.secret(f"service/{username}")
    if ctx.plain_mqtt:
        return MqttSettings(host=host, port=ctx.service_port("mqtt", cfg.broker.ports.mqtt), username=username,
                            password=password, client_id=client_id)
    cert = key = None
    if cfg.tls.mtls:
        cert, key = ctx.paths.cert(f"clients/{username}.pem"), ctx.paths.cert(f"clients/{username}.key")
    return MqttSettings(host=host, port=ctx.service_port("mqtts", cfg.broker.ports.mqtts), username=username,
                        password=password, tls=True, ca=ctx.paths.cert("ca.pem"), cert=cert, key=key,
                        client_id=client_id)


def http_listen(ctx: PlanContext, name: str, port: int) -> HttpListen:
    """Where the service serves /metrics, /healthz and /readyz."""
    return HttpListen(host=ctx.listen_host(), port=ctx.listen_port(name, port))


def python_service(ctx: PlanContext, name: str, *, module: str, port: int, description: str,
                   config: ServiceConfig, volumes: tuple[Volume, ...] = (),
                   depends_on: tuple[str, ...] = ("broker",)) -> ServiceSpec:
    filename = f"{name}.json"
    content = config.render()
    container_file = f"{CONTAINER_CONFIG}/{name}/{filename}"
    return ServiceSpec(
        name=name, role="ecokit", description=description,
        files=(RenderedFile(filename, content, container_file, secret=True),),
        ports=(PortSpec("http", ctx.listen_port(name, port), port, "http"),),
        probe=Probe("http", "http", path="/readyz", expect=(200,), timeout=30.0),
        depends_on=depends_on, volumes=volumes,
        local=LocalCommand(module, (ctx.paths.file(name, filename),), python=True),
        container=ContainerSpec(ctx.config.images.ecokit, command=("python", "-m", module, container_file),
                                aliases=(name,)),
    )
