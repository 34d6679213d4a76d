"""What ``ecokit status`` reports: the stack's services, endpoints and where credentials live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ecokit.acl import SERVICE_ROLES
from ecokit.paths import Target
from ecokit.report import stamped
from ecokit.runtime.base import ServiceStatus
from ecokit.stack import Stack


@dataclass(frozen=True)
class StackStatus:
    stack: str
    runtime: str | None
    state: Literal["running", "partial", "stopped"]
    services: list[ServiceStatus]
    broker: dict[str, Any]
    influxdb: dict[str, Any]
    web: dict[str, str]
    credentials: dict[str, Any]
    project_dir: str = ""
    notes: list[str] = field(default_factory=list)
    profile: str | None = None
    # Anonymous clients may publish and subscribe almost anywhere (the `open` sandbox).
    open_broker: bool = False
    started: float | None = None
    console: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack, "runtime": self.runtime, "state": self.state, "profile": self.profile,
            "open_broker": self.open_broker, **stamped("started_at", self.started if self.runtime else None),
            "project_dir": self.project_dir,
            "services": {s.name: {k: v for k, v in {
                "state": s.state, "description": s.description, "pid": s.pid, "container": s.container,
                "ports": s.ports, "log": s.log, "detail": s.detail or None}.items() if v is not None}
                for s in self.services},
            "broker": self.broker, "influxdb": self.influxdb, "web": self.web,
            "credentials": self.credentials, "notes": self.notes, "console": self.console,
        }


def stack_status(stack: Stack, *, show_secrets: bool = False) -> StackStatus:
    """What runs, where its endpoints are and where its credentials live (``ecokit status``)."""
    name = stack.current_runtime()
    target: Target = name or stack.resolve_runtime(None)
    plan = stack.plan(target)
    services = stack.runtime(target).status(plan)
    running = [s for s in services if s.state == "running"]
    required = [s for s in services if s.state != "unavailable"]
    state: Literal["running", "partial", "stopped"] = (
        "stopped" if not running else "running" if len(running) == len(required) else "partial")
    ctx = stack.placement(target)
    broker_spec = next(s for s in plan if s.role == "broker")
    broker = {"kind": ctx.config.broker.kind, "endpoints": stack.broker_endpoints(target),
              "ca": str(stack.cert_paths.ca_cert) if stack.config.tls.enabled else None,
              "tls": stack.config.tls.enabled, "mtls": stack.config.tls.mtls}
    if any(p.name == "dashboard" for p in broker_spec.ports):
        broker["dashboard"] = broker_spec.port("dashboard").url(ctx.client_host)
    reader = stack.influx_endpoint("reader", target=target)
    writer = stack.influx_endpoint("writer", target=target)
    influx: dict[str, Any] = {"url": reader.url, "version": reader.version, "database": reader.database}
    if reader.version == 1:
        influx.update(username=reader.username, writer_username=writer.username)
        if show_secrets:
            influx.update(password=reader.password, writer_password=writer.password)
    else:
        influx.update(org=stack.config.influxdb.org)
        if show_secrets:
            influx.update(token=reader.token)
    web = {}
    for svc in plan:
        if svc.role in ("dashboard", "metrics"):
            web[svc.name] = svc.port("http").url(ctx.client_host)
    credentials: dict[str, Any] = {
        "secrets_file": str(stack.paths.secrets_file),
        "devices_registry": str(stack.devices_file),
        "users_registry": str(stack.users_file),
        "certs_dir": str(stack.cert_paths.root),
        "device_passwords": "secrets_file: device/<id> (or the registry when set there)",
        "service_users": [r.username for r in SERVICE_ROLES],
    }
    if show_secrets:
        credentials["service_passwords"] = {r.username: stack.service_credentials(r.username)[1]
                                            for r in SERVICE_ROLES}
    recorded = stack.index.get(stack.project_dir, stack.config.stack)
    return StackStatus(stack.config.stack, name, state, services, broker, influx, web, credentials,
                       project_dir=str(stack.project_dir), notes=list(stack.notes), profile=stack.active_profile,
                       open_broker=stack.config.auth.open, started=recorded.started if recorded else None,
                       console=stack.console_status(show_secrets=show_secrets))
