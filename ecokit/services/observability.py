"""Grafana (dashboards) and Prometheus (metrics): provisioned, never clicked together."""

from __future__ import annotations

from ecokit.render import render_template
from ecokit.resources import dashboards_dir
from ecokit.services.context import (
    GRAFANA_ADMIN,
    GRAFANA_SECRET_KEY,
    INFLUX_READER,
    INFLUX_TOKEN,
    PlanContext,
)
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

GRAFANA = "grafana"
PROMETHEUS = "prometheus"
DATASOURCE_INFLUX_UID = "ecokit-influxdb"
DATASOURCE_PROMETHEUS_UID = "ecokit-prometheus"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
# Outside the /var/lib/grafana data volume: a dashboard removed from ecokit must not linger there.
GRAFANA_DASHBOARDS = "/etc/grafana/ecokit-dashboards"


def metrics_targets(ctx: PlanContext, plan_names: tuple[str, ...]) -> list[dict[str, str]]:
    """Scrape jobs: ecokit's own services and EMQX's Prometheus endpoint."""
    jobs = []
    ports = ctx.config.service_ports.model_dump()
    for name in ("bridge", "processor", "shadow", "brokerstats"):
        if name in plan_names:
            jobs.append({"job": f"ecokit-{name}", "path": "/metrics",
                         "target": f"{ctx.service_host(name)}:{ports[name]}"})
    if "console" in plan_names:
        jobs.append({"job": "ecokit-console", "path": "/metrics",
                     "target": f"{ctx.service_host('console')}:{ctx.listen_port('console', ctx.config.console.port)}"})
    if ctx.config.broker.kind == "emqx":
        port = ctx.listen_port("dashboard", ctx.config.broker.ports.dashboard)
        for kind in ("stats", "data_integration"):
            jobs.append({"job": f"emqx-{kind}", "path": f"/api/v5/prometheus/{kind}",
                         "target": f"{ctx.service_host('broker')}:{port}"})
    return jobs


def prometheus(ctx: PlanContext, plan_names: tuple[str, ...]) -> ServiceSpec:
    cfg = ctx.config
    port = PortSpec("http", ctx.listen_port("prometheus", cfg.prometheus.port), cfg.prometheus.port, "http")
    conf = render_template("prometheus/prometheus.yml.j2", stack=cfg.stack,
                           interval=cfg.prometheus.scrape_interval,
                           self_target=f"127.0.0.1:{port.container}",
                           jobs=metrics_targets(ctx, plan_names))
    alerts = render_template("prometheus/alerts.yml.j2", stack=cfg.stack, bridge="bridge" in plan_names,
                             processor="processor" in plan_names)
    conf_path = ctx.paths.file(PROMETHEUS, "prometheus.yml")
    data = ctx.paths.volume(PROMETHEUS, "data", "/prometheus")
    return ServiceSpec(
        name=PROMETHEUS, role="metrics", description="Prometheus metrics",
        files=(RenderedFile("prometheus.yml", conf, "/etc/prometheus/prometheus.yml"),
               RenderedFile("alerts.yml", alerts, "/etc/prometheus/alerts.yml")),
        ports=(port,), probe=Probe("http", "http", path="/-/ready", expect=(200,), timeout=60.0),
        volumes=(Volume("data", "/prometheus"),),
        local=LocalCommand("prometheus", (
            f"--config.file={conf_path}", f"--storage.tsdb.path={data}",
            f"--web.listen-address={ctx.listen_host()}:{port.container}",
            "--storage.tsdb.retention.time=7d",
        ), install_hint="apt-get install prometheus"),
        container=ContainerSpec(cfg.images.prometheus, command=(
            "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=7d", "--web.listen-address=0.0.0.0:9090",
        )),
    )


def grafana(ctx: PlanContext, with_prometheus: bool) -> ServiceSpec:
    cfg = ctx.config
    port = PortSpec("http", ctx.listen_port("grafana", cfg.grafana.port), cfg.grafana.port, "http")
    version = influx_version(ctx)
    influx_url = f"http://{ctx.service_host(INFLUXDB)}:{ctx.service_port('influxdb', cfg.influxdb.port)}"
    prom_url = f"http://{ctx.service_host('prometheus')}:{ctx.service_port('prometheus', cfg.prometheus.port)}"
    datasources = render_template(
        "grafana/datasources.yaml.j2", stack=cfg.stack, influx_url=influx_url,
        database=cfg.influxdb.database, version=version,
        influx_token=ctx.secret(INFLUX_TOKEN) if version == 2 else "",
        reader_password=ctx.secret(INFLUX_READER) if version == 1 else "",
        prometheus_url=prom_url if with_prometheus else "",
        influx_uid=DATASOURCE_INFLUX_UID, prometheus_uid=DATASOURCE_PROMETHEUS_UID,
    )
    providers = render_template("grafana/dashboards.yaml.j2", stack=cfg.stack, path=GRAFANA_DASHBOARDS)
    files = [
        RenderedFile("provisioning/datasources/ecokit.yaml", datasources,
                     f"{GRAFANA_PROVISIONING}/datasources/ecokit.yaml", secret=True),
        RenderedFile("provisioning/dashboards/ecokit.yaml", providers,
                     f"{GRAFANA_PROVISIONING}/dashboards/ecokit.yaml"),
        RenderedFile("admin-password", ctx.secret(GRAFANA_ADMIN).encode(), "/ecokit/secrets/grafana-admin",
                     secret=True),
        RenderedFile("secret-key", ctx.secret(GRAFANA_SECRET_KEY).encode(), "/ecokit/secrets/grafana-key",
                     secret=True),
    ]
    for dashboard in sorted(dashboards_dir().glob("*.json")):
        files.append(RenderedFile(f"dashboards/{dashboard.name}", dashboard.read_bytes(),
                                  f"{GRAFANA_DASHBOARDS}/{dashboard.name}"))
    env = {
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_SECURITY_ADMIN_PASSWORD__FILE": "/ecokit/secrets/grafana-admin",
        "GF_SECURITY_SECRET_KEY__FILE": "/ecokit/secrets/grafana-key",
        "GF_PATHS_PROVISIONING": GRAFANA_PROVISIONING,
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
        "GF_PLUGINS_PREINSTALL_DISABLED": "true",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_AUTH_ANONYMOUS_ENABLED": "true" if cfg.grafana.anonymous_viewer else "false",
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{GRAFANA_DASHBOARDS}/fleet-overview.json",
    }
    return ServiceSpec(
        name=GRAFANA, role="dashboard", description=f"Grafana ({cfg.images.grafana})",
        files=tuple(files), ports=(port,),
        probe=Probe("http", "http", path="/api/health", expect=(200,), timeout=90.0),
        volumes=(Volume("data", "/var/lib/grafana"),),
        depends_on=(INFLUXDB,),
        local=LocalCommand("grafana-server", install_hint="Grafana runs in docker: use --runtime docker"),
        container=ContainerSpec(cfg.images.grafana, env=env, file_owner=(472, 0)),
    )
