"""`ecokit doctor`: what this machine has, what the stack needs, and how to fix the gap."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ecokit.errors import EcokitError
from ecokit.runtime import docker_engine_answers, docker_runtime_installed
from ecokit.runtime.local import find_binary
from ecokit.runtime.process import port_is_free
from ecokit.services.spec import LocalCommand
from ecokit.status import stack_status

Level = Literal["ok", "warn", "fail", "info"]


@dataclass(frozen=True)
class Check:
    area: str
    level: Level
    detail: str
    fix: str = ""


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown version"


def check_machine() -> list[Check]:
    checks = []
    py = sys.version_info
    checks.append(Check("python", "ok" if py >= (3, 11) else "fail", f"Python {py.major}.{py.minor}.{py.micro}",
                        "" if py >= (3, 11) else "ecokit needs Python 3.11 or newer"))
    for binary, args, fix, required in (
        ("mosquitto", ["-h"], "apt-get install mosquitto", True),
        ("influxd", ["version"], "apt-get install influxdb", True),
        ("prometheus", ["--version"], "apt-get install prometheus (optional: metrics)", False),
        ("mosquitto_pub", ["--help"], "apt-get install mosquitto-clients (optional: handy for debugging)",
         False),
    ):
        path = find_binary(LocalCommand(binary))
        if path:
            version = _version([path, *args]) if binary != "mosquitto_pub" else "present"
            checks.append(Check(binary, "ok", f"{path}: {version}"))
        else:
            checks.append(Check(binary, "fail" if required else "warn",
                                f"`{binary}` not found (needed by the local runtime)" if required
                                else f"`{binary}` not found", fix))
    if find_binary(LocalCommand("mosquitto")):
        from ecokit.stack import _mosquitto_has_websockets

        if _mosquitto_has_websockets():
            checks.append(Check("websockets", "ok", "mosquitto has websockets: ws/wss endpoints available"))
        else:
            checks.append(Check("websockets", "info",
                                "this mosquitto build has no websockets: the local runtime serves mqtt/mqtts only",
                                "use --runtime docker (or EMQX) for ws:// and wss://"))
    if docker_engine_answers():
        level: Level = "ok" if docker_runtime_installed() else "warn"
        checks.append(Check("docker", level, "a Docker engine answers: `--runtime auto` uses docker"))
    else:
        checks.append(Check("docker", "info", "no Docker engine answers: `--runtime auto` uses local processes",
                            "for EMQX, InfluxDB 2 and Grafana start dockerd (apt-get install docker.io)"))
    return checks


def check_stack(stack: object) -> list[Check]:
    """Checks that need the project's configuration (ports, certs, secrets)."""
    from ecokit.stack import Stack

    assert isinstance(stack, Stack)
    checks: list[Check] = []
    try:
        devices = stack.devices()
        stack.users()
        checks.append(Check("registry", "ok", f"{len(devices)} devices in {stack.devices_file}"))
    except EcokitError as exc:
        checks.append(Check("registry", "fail", str(exc)))
    running_ports: set[int] = set()
    runtime = stack.current_runtime()
    if runtime is not None:
        try:
            statuses = stack_status(stack).services
            for svc in statuses:
                if svc.state == "running":
                    running_ports.update(svc.ports.values())
            up = [s.name for s in statuses if s.state == "running"]
            checks.append(Check("stack", "ok" if up else "info",
                                f"{stack.config.stack} on {runtime}: running {', '.join(up) or 'nothing'}"))
        except EcokitError as exc:
            checks.append(Check("stack", "warn", str(exc)))
    else:
        checks.append(Check("stack", "info", f"{stack.config.stack} is not up", "run: ecokit up"))
    host = stack.readiness().host
    busy = []
    for key, port in stack.config.host_ports().items():
        if port in running_ports:
            continue
        try:
            free = port_is_free(host, port)
        except OSError as exc:
            checks.append(Check("ports", "fail", f"{key}={port}: {exc}"))
            continue
        if not free:
            busy.append(f"{key}={port}")
    if busy:
        checks.append(Check("ports", "fail", f"in use by other processes: {', '.join(busy)}",
                            "free them or choose other ports in ecokit.yaml"))
    else:
        checks.append(Check("ports", "ok", f"every port the stack needs is free on {host}"))
    ca = stack.cert_paths.ca_cert
    if stack.config.tls.enabled or ca.exists():
        certs = stack.check_certs()
        bad = [c for c in certs if not c.ok]
        soonest = min((c.days_left for c in certs if c.days_left is not None), default=None)
        if bad:
            first = bad[0]
            checks.append(Check("certs", "fail" if stack.config.tls.enabled else "warn",
                                f"{len(bad)} of {len(certs)} need attention; {first.name}: "
                                f"{'; '.join(first.problems)}", "run: ecokit certs generate"))
        else:
            checks.append(Check("certs", "ok", f"{len(certs)} certificates valid; the first expires in "
                                               f"{soonest} days"))
    checks += check_images(stack)
    secrets = stack.paths.secrets_file
    if Path(secrets).exists():
        mode = secrets.stat().st_mode & 0o777
        checks.append(Check("secrets", "ok" if not mode & 0o077 else "fail", f"{secrets} (mode {mode:o})",
                            "" if not mode & 0o077 else f"chmod 600 {secrets}"))
    return checks


def check_images(stack: object) -> list[Check]:
    """Docker runtime: are the plan's (pinned) images on this engine, or must they be pulled/built?"""
    from ecokit.stack import Stack

    assert isinstance(stack, Stack)
    if stack.config.runtime == "local" or not (docker_runtime_installed() and docker_engine_answers()):
        return []
    from ecokit.runtime.docker.engine import Engine

    try:
        engine = Engine.connect()
        try:
            refs = sorted({s.container.image for s in stack.plan("docker") if s.container is not None})
            missing = [ref for ref in refs if engine.image_id(ref) is None]
        finally:
            engine.close()
    except EcokitError as exc:
        return [Check("images", "warn", str(exc))]
    if not missing:
        return [Check("images", "ok", f"all {len(refs)} images of the docker stack are present")]
    fixes = []
    if stack.config.images.ecokit in missing:
        fixes.append(f"docker build -f infra/Dockerfile -t {stack.config.images.ecokit} .")
    if [ref for ref in missing if ref != stack.config.images.ecokit]:
        fixes.append("`ecokit up` pulls the others (needs a registry)")
    return [Check("images", "warn", f"not on this engine yet: {', '.join(missing)}", "; ".join(fixes))]
