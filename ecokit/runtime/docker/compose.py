"""`ecokit compose`: the docker runtime's stack as a docker-compose.yml.

Same containers, names, labels, network, volumes, ports, environment and files as
``ecokit up --runtime docker``, so ``ecokit down`` also finds a Compose-started stack.

Files go in as Compose ``configs`` with inline ``content``: Compose copies those into the
container with the ``uid``/``gid``/``mode`` given (it ignores them for ``file:`` configs,
which are bind mounts), which is what EMQX (uid 1000, 0600 bootstrap CSV), Grafana (472)
and Mosquitto (1883) need. The document therefore holds credentials: it is written 0600.

Every service gets a ``healthcheck`` run inside its container (the tools each image ships:
``mosquitto_sub``, ``emqx ctl``, ``influx ping``, busybox ``wget``, ecokit's Python), and
``depends_on`` waits for ``service_healthy``: the same order and readiness `ecokit up` keeps
by probing from outside.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from ecokit.errors import RenderError
from ecokit.render import PathMap
from ecokit.runtime.docker.runtime import DockerSettings
from ecokit.runtime.docker.service import ContainerFile, StackNames, container_files, file_owner
from ecokit.services.spec import ServiceSpec, ordered

# How often Compose runs a healthcheck, and how long a service may take to become healthy.
HEALTH_INTERVAL_S = 5
HEALTH_TIMEOUT_S = 5

# What Compose cannot do that `ecokit up` does after a service is ready.
POST_START_NOTES = {
    "influxdb-v1-setup": "InfluxDB 1.x users and database are created by `ecokit up`; "
                         "Compose does not run that step (the docker default, InfluxDB 2, needs none)",
}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _escape(text: str) -> str:
    """Compose interpolates ``$VAR`` everywhere, EMQX's ``${username}`` included."""
    return text.replace("$", "$$")


def _config_key(service: str, path: str) -> str:
    return f"{service}-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", path.strip("/"))


def _port(bind: str, host: int, container: int) -> str:
    shown = f"[{bind}]" if ":" in bind else bind
    return f"{shown}:{host}:{container}"


def compose_document(settings: DockerSettings, plan: Sequence[ServiceSpec]) -> dict[str, Any]:
    names = StackNames(settings.stack)
    certs_required = settings.tls
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    in_plan = {s.name for s in plan}
    healthy = {s.name for s in plan if s.container is not None and healthcheck(s) is not None}
    for spec in ordered(plan):
        if spec.container is None:
            continue
        c = spec.container
        entry: dict[str, Any] = {
            "image": c.image,
            "container_name": names.container(spec.name),
            "hostname": spec.name,
            "labels": names.labels(spec.name),
            "networks": {"ecokit": {"aliases": list(dict.fromkeys((spec.name, *c.aliases)))}},
        }
        if c.entrypoint is not None:
            entry["entrypoint"] = [_escape(a) for a in c.entrypoint]
        if c.command is not None:
            entry["command"] = [_escape(a) for a in c.command]
        if c.env:
            entry["environment"] = {k: _escape(v) for k, v in sorted(c.env.items())}
        if c.user:
            entry["user"] = c.user
        if spec.ports:
            entry["ports"] = [_port(settings.bind, p.host, p.container) for p in spec.ports]
        if spec.volumes:
            entry["volumes"] = []
            for volume in spec.volumes:
                key = f"{spec.name}-{volume.name}"
                volumes[key] = {"name": names.volume(spec.name, volume.name),
                                "labels": names.labels(spec.name, **{"ecokit.volume": volume.name})}
                entry["volumes"].append(f"{key}:{volume.container_path}")
        check = healthcheck(spec)
        if check is not None:
            entry["healthcheck"] = check
        deps = [d for d in spec.depends_on if d in in_plan]
        if deps:
            entry["depends_on"] = {d: {"condition": "service_healthy" if d in healthy else "service_started"}
                                   for d in deps}
        files: list[ContainerFile] = container_files(spec, settings.cert_paths, certs_required=certs_required)
        uid, gid = file_owner(spec)
        if files:
            entry["configs"] = []
            for f in files:
                key = _config_key(spec.name, f.path)
                try:
                    content = f.content.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RenderError(f"{spec.name}: {f.path} is not text; Compose configs carry text") from exc
                configs[key] = {"content": _escape(content)}
                entry["configs"].append({"source": key, "target": f.path, "uid": str(uid), "gid": str(gid),
                                         "mode": f.mode})
        services[spec.name] = entry
    document: dict[str, Any] = {
        "name": names.network,
        "services": services,
        "networks": {"ecokit": {"name": names.network, "labels": names.labels()}},
    }
    if volumes:
        document["volumes"] = volumes
    if configs:
        document["configs"] = configs
    return document


def _requires_client_cert(spec: ServiceSpec) -> bool:
    """Whether the broker's rendered configuration asks TLS clients for a certificate."""
    return any(b"require_certificate true" in f.content or b'verify = verify_peer' in f.content
               for f in spec.files)


def _check_command(spec: ServiceSpec) -> list[str] | None:
    """The command that tells, inside the container, that the service is ready (None: none fits)."""
    probe = spec.probe
    if probe is None or spec.container is None:
        return None
    port = next((p for p in spec.ports if p.name == probe.port), None)
    if port is None:
        return None
    url = f"http://127.0.0.1:{port.container}{probe.path}"
    if probe.kind == "mqtt":
        if spec.local is not None and spec.local.binary == "emqx":
            return ["/opt/emqx/bin/emqx", "ctl", "status"]
        if port.scheme == "mqtts" and _requires_client_cert(spec):
            return None  # the health user's client certificate is not placed in the broker's container
        command = ["mosquitto_sub", "-h", "localhost" if port.scheme == "mqtts" else "127.0.0.1",
                   "-p", str(port.container), "-t", "ecokit/healthcheck", "-E", "-i", f"{spec.name}-healthcheck",
                   "-u", probe.username or "", "-P", probe.password or ""]
        if port.scheme == "mqtts":
            command += ["--cafile", f"{PathMap.CONTAINER_CERTS}/ca.pem"]
        return command
    if probe.kind != "http":
        return None
    if spec.role == "ecokit":
        return ["python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=4)"]
    if spec.role == "store":
        # InfluxDB 2's image has its CLI; the 1.x images have no HTTP client to ask /ping with.
        return ["influx", "ping", "--host", f"http://127.0.0.1:{port.container}"] if probe.path == "/health" \
            else None
    # Prometheus (busybox) and Grafana (Alpine) images ship busybox wget.
    return ["wget", "-q", "-O", "/dev/null", url]


def healthcheck(spec: ServiceSpec) -> dict[str, Any] | None:
    """Compose's ``healthcheck`` for a service; it may take as long as its probe allows."""
    command = _check_command(spec)
    if command is None or spec.probe is None:
        return None
    return {"test": ["CMD", *(_escape(a) for a in command)], "interval": f"{HEALTH_INTERVAL_S}s",
            "timeout": f"{HEALTH_TIMEOUT_S}s", "retries": 3, "start_period": f"{int(spec.probe.timeout)}s"}


def compose_notes(plan: Sequence[ServiceSpec]) -> list[str]:
    notes = ["holds credentials (passwords, tokens, keys): keep it 0600 and out of version control",
             "needs Docker Compose 2.23+ (configs with inline content, copied with uid/gid/mode)",
             "each service has a healthcheck and starts once the services it depends on are healthy"]
    unchecked = [s.name for s in plan if s.container is not None and healthcheck(s) is None]
    if unchecked:
        notes.append(f"no healthcheck for {', '.join(unchecked)} (no tool in the image fits the probe): "
                     "what depends on them waits for them to start only")
    for spec in plan:
        notes += [f"{spec.name}: {POST_START_NOTES[step]}" for step in spec.post_start if step in POST_START_NOTES]
    return notes


def render_compose(settings: DockerSettings, plan: Sequence[ServiceSpec]) -> str:
    header = [f"# docker-compose.yml for ecokit stack {settings.stack!r}, written by `ecokit compose`.",
              "# Equivalent to `ecokit up --runtime docker`: same containers, labels, network and volumes.",
              *(f"# - {note}" for note in compose_notes(plan))]
    body = yaml.dump(compose_document(settings, plan), Dumper=_Dumper, sort_keys=False, width=1000,
                     default_flow_style=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body
