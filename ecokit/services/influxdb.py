"""InfluxDB: 1.x from the distribution for the local runtime, 2.7 in docker.

Both are spoken to through the v1 HTTP API (/write, /query), which every version serves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ecokit.config.model import StackConfig
from ecokit.render import render_template
from ecokit.services.context import INFLUX_ADMIN, INFLUX_READER, INFLUX_TOKEN, INFLUX_WRITER, Placement, PlanContext
from ecokit.services.spec import (
    ContainerSpec,
    LocalCommand,
    PortSpec,
    Probe,
    RenderedFile,
    ServiceSpec,
    Volume,
)
from ecokit.store.influx import InfluxEndpoint, InfluxV1, check_v1_mapping, setup_v1

INFLUXDB = "influxdb"
SETUP_V1 = "influxdb-v1-setup"
SETUP_V2 = "influxdb-v2-setup"


def influx_version(ctx: Placement) -> int:
    configured = ctx.config.influxdb.version
    if configured != "auto":
        return int(configured)
    return ctx.caps.influx_version if ctx.target == "local" else 2


def influxdb(ctx: PlanContext) -> ServiceSpec:
    cfg = ctx.config
    port = PortSpec("http", ctx.listen_port("influxdb", cfg.influxdb.port), cfg.influxdb.port, "http")
    if influx_version(ctx) == 2:
        return _influxdb_v2(ctx, port)
    data = ctx.paths.volume(INFLUXDB, "data", "/var/lib/influxdb")
    conf = render_template(
        "influxdb/influxdb.conf.j2", stack=cfg.stack, influx=cfg.influxdb, data_dir=data,
        http_bind=f"{ctx.listen_host()}:{port.container}",
        rpc_bind=f"127.0.0.1:{cfg.influxdb.rpc_port if ctx.target == 'local' else 8088}",
    )
    path = ctx.paths.file(INFLUXDB, "influxdb.conf")
    return ServiceSpec(
        name=INFLUXDB, role="store", description="InfluxDB 1.x time-series store",
        files=(RenderedFile("influxdb.conf", conf, "/etc/influxdb/influxdb.conf"),),
        ports=(port,), probe=Probe("http", "http", path="/ping", expect=(204,), timeout=60.0),
        volumes=(Volume("data", "/var/lib/influxdb"),),
        local=LocalCommand("influxd", ("run", "-config", path), install_hint="apt-get install influxdb"),
        container=ContainerSpec(cfg.images.influxdb,
                                command=("influxd", "run", "-config", "/etc/influxdb/influxdb.conf")),
        post_start=(SETUP_V1,),
    )


def _influxdb_v2(ctx: PlanContext, port: PortSpec) -> ServiceSpec:
    cfg = ctx.config
    secrets_dir = "/ecokit/secrets"
    env = {
        # Setup runs only on an empty volume (no influxd.bolt yet); later env changes do nothing.
        "DOCKER_INFLUXDB_INIT_MODE": "setup",
        "DOCKER_INFLUXDB_INIT_USERNAME": "admin",
        "DOCKER_INFLUXDB_INIT_PASSWORD_FILE": f"{secrets_dir}/admin-password",
        "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE": f"{secrets_dir}/admin-token",
        "DOCKER_INFLUXDB_INIT_ORG": cfg.influxdb.org,
        "DOCKER_INFLUXDB_INIT_BUCKET": cfg.influxdb.database,
        "DOCKER_INFLUXDB_INIT_RETENTION": cfg.influxdb.retention if cfg.influxdb.retention != "0" else "0s",
        "INFLUXD_REPORTING_DISABLED": "true",
    }
    files = (
        RenderedFile("admin-password", ctx.secret(INFLUX_ADMIN).encode(), f"{secrets_dir}/admin-password",
                     secret=True),
        RenderedFile("admin-token", ctx.secret(INFLUX_TOKEN).encode(), f"{secrets_dir}/admin-token",
                     secret=True),
    )
    return ServiceSpec(
        name=INFLUXDB, role="store", description=f"InfluxDB 2 ({cfg.images.influxdb})",
        files=files, ports=(port,),
        # /health answers 200 only after the entrypoint's setup has finished.
        probe=Probe("http", "http", path="/health", expect=(200,), timeout=90.0),
        volumes=(Volume("data", "/var/lib/influxdb2"), Volume("config", "/etc/influxdb2")),
        local=None,
        container=ContainerSpec(cfg.images.influxdb, env=env),
        post_start=(SETUP_V2,),
    )


@dataclass(frozen=True)
class PostStart:
    """What InfluxDB's provisioning needs once it answers: its admin endpoint and the users'
    passwords (``secrets``, by name)."""

    admin: InfluxEndpoint
    config: StackConfig
    secrets: Mapping[str, str]


def setup_influx_v1(ctx: PostStart) -> None:
    """InfluxDB 1.x: the database, its retention and the writer and reader users."""
    setup_v1(ctx.admin, database=ctx.config.influxdb.database, retention=ctx.config.influxdb.retention,
             users={"ecokit-writer": (ctx.secrets[INFLUX_WRITER], "WRITE"),
                    "ecokit-reader": (ctx.secrets[INFLUX_READER], "READ")})


def check_influx_v2(ctx: PostStart) -> None:
    """InfluxDB 2.x: the image's entrypoint creates org, bucket and operator token on an empty
    volume, and buckets map to databases automatically (virtual DBRP, 2.4+); prove it answers v1,
    and that no explicit DBRP mapping sends the database's writes to another bucket."""
    with InfluxV1(ctx.admin) as client:
        client.query("SHOW MEASUREMENTS LIMIT 1")
        check_v1_mapping(client, org=ctx.config.influxdb.org, database=ctx.config.influxdb.database)


# The steps a ServiceSpec names in ``post_start``, run once the service is ready.
POST_START: dict[str, Callable[[PostStart], None]] = {
    SETUP_V1: setup_influx_v1,
    SETUP_V2: check_influx_v2,
}
