"""What a runtime needs to run a service, and nothing about how it runs it.

A plan is a list of ServiceSpec, built as a pure function of the configuration. The local
runtime uses ``local``; the docker runtime uses ``container``; both use the rendered
files, the ports, the readiness probe and the dependencies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["broker", "store", "dashboard", "metrics", "ecokit"]


@dataclass(frozen=True)
class RenderedFile:
    """One rendered config file of a service.

    ``relpath`` is under the service's rendered folder; ``container_path`` is where the
    docker runtime places it. ``secret`` files hold credentials: 0600 on the host.
    """

    relpath: str
    content: bytes
    container_path: str | None = None
    secret: bool = False

    @property
    def mode(self) -> int:
        return 0o600 if self.secret else 0o644


@dataclass(frozen=True)
class PortSpec:
    """A port a service listens on. ``scheme`` says what speaks there."""

    name: str
    container: int
    host: int
    scheme: Literal["mqtt", "mqtts", "ws", "wss", "http", "https", "tcp"] = "tcp"
    path: str = ""  # URL path, e.g. /mqtt for websockets

    def url(self, host: str) -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.host}{self.path}"


@dataclass(frozen=True)
class Probe:
    """How to tell that a service is ready.

    tcp: a connection is accepted. http: a GET of ``path`` returns one of ``expect``.
    mqtt: a CONNECT with ``username``/``password`` gets CONNACK success.
    """

    kind: Literal["tcp", "http", "mqtt"]
    port: str  # a PortSpec name
    path: str = "/"
    expect: tuple[int, ...] = (200, 204)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    interval: float = 0.2


@dataclass(frozen=True)
class LocalCommand:
    """How the local runtime starts the service: a binary found on PATH plus arguments."""

    binary: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    search: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin")  # beyond PATH
    python: bool = False  # run with this interpreter (`binary` is then a module name)
    install_hint: str = ""


@dataclass(frozen=True)
class Volume:
    """Persistent data: a named volume in docker, ``data/<service>/<name>`` locally."""

    name: str
    container_path: str


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    # uid:gid that must be able to read the rendered files (EMQX runs as 1000, Grafana 472).
    file_owner: tuple[int, int] | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    role: Role
    description: str
    files: tuple[RenderedFile, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    probe: Probe | None = None
    depends_on: tuple[str, ...] = ()
    volumes: tuple[Volume, ...] = ()
    local: LocalCommand | None = None
    container: ContainerSpec | None = None
    # Named steps run once the service is ready (e.g. creating InfluxDB users).
    post_start: tuple[str, ...] = ()
    # Files the running service re-reads on ``reload_signal`` (Mosquitto: passwd and acl on
    # SIGHUP), so registering a device does not drop every connection.
    reload_signal: str | None = None
    reloadable: tuple[str, ...] = ()

    def port(self, name: str) -> PortSpec:
        for port in self.ports:
            if port.name == name:
                return port
        raise KeyError(f"{self.name} has no port {name!r}")

    def fingerprint(self) -> str:
        """Changes whenever anything that requires a restart changes."""
        return self._digest(lambda f: f.relpath not in self.reloadable)

    def content_fingerprint(self) -> str:
        """Changes whenever any file changes, reloadable ones included."""
        return self._digest(lambda f: True)

    def _digest(self, include: Callable[[RenderedFile], bool]) -> str:
        h = hashlib.sha256()
        h.update(repr((self.name, self.ports, self.volumes, self.local, self.container,
                       self.probe)).encode())
        for f in sorted(self.files, key=lambda f: f.relpath):
            if include(f):
                h.update(f.relpath.encode() + b"\0" + f.content + b"\0")
        return h.hexdigest()[:16]


def ordered(plan: Sequence[ServiceSpec]) -> list[ServiceSpec]:
    """Services in an order where every dependency starts first (stable otherwise)."""
    by_name = {s.name: s for s in plan}
    done: dict[str, ServiceSpec] = {}
    visiting: set[str] = set()

    def visit(spec: ServiceSpec) -> None:
        if spec.name in done:
            return
        if spec.name in visiting:
            raise ValueError(f"dependency cycle through {spec.name}")
        visiting.add(spec.name)
        for dep in spec.depends_on:
            if dep in by_name:
                visit(by_name[dep])
        visiting.discard(spec.name)
        done[spec.name] = spec

    for spec in plan:
        visit(spec)
    return list(done.values())
