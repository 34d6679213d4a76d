"""`ecokit compose`: the docker runtime's stack as a docker-compose.yml.

Same containers, names, labels, network, volumes, ports, environment and files as
``ecokit up --runtime docker``, so ``ecokit down`` also finds a Compose-started stack.

Files go in as Compose ``configs`` with inline ``content``: Compose copies those into the
container with the ``uid``/``gid``/``mode`` given (it ignores them for ``file:`` configs,
which are bind mounts), which is what EMQX (uid 1000, 0600 bootstrap CSV), Grafana (472)
and Mosquitto (1883) need. The document therefore holds credentials: it is written 0600.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from ecokit.errors import RenderError
from ecokit.runtime.docker.runtime import DockerSettings
from ecokit.runtime.docker.service import ContainerFile, StackNames, container_files, file_owner
from ecokit.services.spec import ServiceSpec, ordered

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
            entry["ports"] = [_port(p.host_ip or settings.bind, p.host, p.container) for p in spec.ports]
        if spec.volumes:
            entry["volumes"] = []
            for volume in spec.volumes:
                key = f"{spec.name}-{volume.name}"
                volumes[key] = {"name": names.volume(spec.name, volume.name),
                                "labels": names.labels(spec.name, **{"ecokit.volume": volume.name})}
                entry["volumes"].append(f"{key}:{volume.container_path}")
        deps = [d for d in spec.depends_on if d in in_plan]
        if deps:
            entry["depends_on"] = deps
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


def compose_notes(plan: Sequence[ServiceSpec]) -> list[str]:
    notes = ["holds credentials (passwords, tokens, keys): keep it 0600 and out of version control",
             "needs Docker Compose 2.23+ (configs with inline content, copied with uid/gid/mode)",
             "services start in dependency order without readiness waits; `ecokit up` waits on each probe"]
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
