"""A thin layer over the Docker SDK: the calls ecokit makes, with the engine's errors translated.

Like docker-py's own split (``docker/api`` low level, ``docker/models`` above it), this
module only speaks to the engine; what a *service* is lives in ``service.py`` and the
runtime in ``runtime.py``. Every failure becomes an :class:`~ecokit.errors.EngineError`
that says what was asked and what the engine answered, or
:class:`~ecokit.errors.RuntimeUnavailable` when no engine answers at all.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from ecokit.errors import ConfigError, EngineError, RuntimeUnavailable

# How long a stopping container gets before SIGKILL.
STOP_TIMEOUT = 10
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}

_REF = re.compile(
    r"^(?P<repo>[a-z0-9][a-z0-9._/:-]*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


@dataclass(frozen=True)
class ImageRef:
    """An image reference that is pinned: an exact tag (never ``latest``) or a digest."""

    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        match = _REF.match(ref)
        if match is None:
            raise ConfigError(f"{ref!r} is not an image reference", key="images")
        repo, tag, digest = match["repo"], match["tag"], match["digest"]
        # `registry:5000/name` without a tag: the colon belongs to the registry host.
        if tag is None and digest is None:
            raise ConfigError(f"image {ref!r} has no tag; pin an exact version", key="images")
        if tag == "latest" and digest is None:
            raise ConfigError(f"image {ref!r} is unpinned; `latest` changes under you, pin an exact version",
                              key="images")
        return cls(repo, tag, digest)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def pull_tag(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or ""


@dataclass(frozen=True)
class PullProgress:
    ref: str
    done: int
    total: int
    status: str

    def describe(self) -> str:
        if self.total:
            return f"{self.ref}: {self.status} {self.done / 1e6:.0f}/{self.total / 1e6:.0f} MB"
        return f"{self.ref}: {self.status}"


@dataclass(frozen=True)
class ContainerConfig:
    """Everything ecokit sets on a container it creates."""

    name: str
    image: str
    network: str
    hostname: str
    labels: Mapping[str, str]
    command: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    aliases: Sequence[str] = ()
    # (container port, host address, host port)
    ports: Sequence[tuple[int, str, int]] = ()
    # (volume name, path in the container)
    volumes: Sequence[tuple[str, str]] = ()


def label_filter(labels: Mapping[str, str]) -> dict[str, list[str]]:
    return {"label": [f"{k}={v}" for k, v in sorted(labels.items())]}


class Engine:
    """The Docker engine, as ecokit uses it."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, environment: Mapping[str, str] | None = None, *, timeout: int = 120) -> Engine:
        """Connect where DOCKER_HOST (or the default socket) points, and check the engine answers."""
        try:
            client = docker.from_env(environment=dict(environment) if environment is not None else None,
                                     timeout=timeout)
            client.ping()
        except (DockerException, requests.RequestException) as exc:
            raise RuntimeUnavailable(f"no Docker engine answers ({_reason(exc)})",
                                     hint="start dockerd (or set DOCKER_HOST), or use --runtime local") from exc
        return cls(client)

    def close(self) -> None:
        self.client.close()

    @contextlib.contextmanager
    def _call(self, action: str, hint: str | None = None, *, missing_ok: bool = False) -> Iterator[None]:
        """Translate the SDK's errors; ``missing_ok``: an object already gone is no error."""
        try:
            yield
        except NotFound as exc:
            if missing_ok:
                return
            raise EngineError(action, _reason(exc), status=404, hint=hint) from exc
        except APIError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise EngineError(action, _reason(exc), status=status, hint=hint) from exc
        except (DockerException, requests.RequestException) as exc:
            raise RuntimeUnavailable(f"docker engine: {action} failed: {_reason(exc)}",
                                     hint="is dockerd still running?") from exc

    def version(self) -> dict[str, Any]:
        with self._call("version"):
            result: dict[str, Any] = self.client.version()
        return result

    # -- images ------------------------------------------------------------------------

    def image_id(self, ref: str) -> str | None:
        """The id of a local image, or None when it is not here."""
        try:
            return str(self.client.images.get(ref).id)
        except ImageNotFound:
            return None
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"inspect image {ref}", _reason(exc)) from exc

    def pull(self, ref: str, progress: Callable[[PullProgress], None] | None = None,
             *, every: float = 0.5) -> str:
        """Pull a pinned image, reporting bytes as they arrive; returns the image id."""
        image = ImageRef.parse(ref)
        layers: dict[str, tuple[int, int]] = {}
        last = 0.0
        hint = (f"no registry answered for {ref}: load or build the image on this machine "
                "(docker load / docker build), or set another pinned tag under `images:` in ecokit.yaml")
        with self._call(f"pull {ref}", hint=hint):
            stream = self.client.api.pull(image.repository, tag=image.pull_tag, stream=True, decode=True)
            for event in stream:
                if "error" in event:
                    raise EngineError(f"pull {ref}", str(event["error"]), hint=hint)
                detail = event.get("progressDetail") or {}
                if event.get("id") and detail.get("total"):
                    layers[event["id"]] = (int(detail.get("current", 0)), int(detail["total"]))
                now = time.monotonic()
                if progress is not None and now - last >= every:
                    last = now
                    done = sum(c for c, _ in layers.values())
                    total = sum(t for _, t in layers.values())
                    progress(PullProgress(ref, done, total, str(event.get("status", "pulling")).lower()))
            if progress is not None:
                total = sum(t for _, t in layers.values())
                progress(PullProgress(ref, total, total, "pulled"))
        found = self.image_id(ref)
        if found is None:
            raise EngineError(f"pull {ref}", "the engine reported success but the image is not there", hint=hint)
        return found

    def build(self, context: Path, dockerfile: str, tag: str, *, buildargs: Mapping[str, str] | None = None,
              progress: Callable[[str], None] | None = None, network_mode: str | None = None) -> str:
        """Build ``dockerfile`` (relative to ``context``, which honours .dockerignore) as ``tag``;
        ``progress`` gets each build step. Returns the image id."""
        ImageRef.parse(tag)
        output: list[str] = []
        hint = f"the build of {tag} needs its base image and Python packages (a registry and PyPI)"
        with self._call(f"build {tag}", hint=hint):
            stream = self.client.api.build(path=str(context), dockerfile=dockerfile, tag=tag,
                                           buildargs=dict(buildargs or {}), rm=True, forcerm=True, decode=True,
                                           network_mode=network_mode)
            for event in stream:
                if "error" in event:
                    tail = "".join(output)[-2000:]
                    raise EngineError(f"build {tag}", f"{str(event['error']).strip()}\n{tail}".strip(), hint=hint)
                text = str(event.get("stream", ""))
                output.append(text)
                if progress is not None and text.startswith("Step "):
                    progress(text.strip())
        found = self.image_id(tag)
        if found is None:
            raise EngineError(f"build {tag}", "".join(output)[-2000:] or "no image after the build", hint=hint)
        return found

    def ensure_image(self, ref: str, progress: Callable[[PullProgress], None] | None = None) -> str:
        ImageRef.parse(ref)  # never run an unpinned image, even one that is already here
        found = self.image_id(ref)
        return found if found is not None else self.pull(ref, progress)

    # -- networks and volumes -----------------------------------------------------------

    def ensure_network(self, name: str, labels: Mapping[str, str]) -> Any:
        with self._call(f"create network {name}"):
            for net in self.client.networks.list(names=[name]):
                if net.name == name:
                    return net
            return self.client.networks.create(name, driver="bridge", labels=dict(labels),
                                               check_duplicate=True)

    def networks(self, labels: Mapping[str, str]) -> list[Any]:
        with self._call("list networks"):
            return list(self.client.networks.list(filters=label_filter(labels)))

    def remove_network(self, network: Any) -> None:
        with self._call(f"remove network {network.name}", missing_ok=True):
            network.remove()

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> Any:
        with self._call(f"create volume {name}"):
            try:
                return self.client.volumes.get(name)
            except NotFound:
                return self.client.volumes.create(name=name, driver="local", labels=dict(labels))

    def volumes(self, labels: Mapping[str, str]) -> list[Any]:
        with self._call("list volumes"):
            return list(self.client.volumes.list(filters=label_filter(labels)))

    def remove_volume(self, volume: Any) -> None:
        with self._call(f"remove volume {volume.name}", missing_ok=True):
            volume.remove(force=True)

    # -- containers --------------------------------------------------------------------

    def container(self, name: str) -> Any | None:
        try:
            return self.client.containers.get(name)
        except NotFound:
            return None
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"inspect container {name}", _reason(exc)) from exc

    def containers(self, labels: Mapping[str, str]) -> list[Any]:
        """Every container with these labels, running or not."""
        with self._call("list containers"):
            return list(self.client.containers.list(all=True, filters=label_filter(labels)))

    def create_container(self, config: ContainerConfig) -> Any:
        api = self.client.api
        with self._call(f"create container {config.name}"):
            host_config = api.create_host_config(
                port_bindings={c: (host, port) for c, host, port in config.ports},
                binds={volume: {"bind": path, "mode": "rw"} for volume, path in config.volumes},
                network_mode=config.network,
                log_config={"type": "json-file", "config": dict(LOG_OPTIONS)},
                init=False,
            )
            networking = api.create_networking_config(
                {config.network: api.create_endpoint_config(aliases=list(config.aliases))})
            created = api.create_container(
                config.image,
                command=list(config.command) if config.command is not None else None,
                entrypoint=list(config.entrypoint) if config.entrypoint is not None else None,
                name=config.name, hostname=config.hostname, user=config.user or "",
                environment=dict(config.env), labels=dict(config.labels),
                ports=[c for c, _, _ in config.ports],
                host_config=host_config, networking_config=networking,
            )
            return self.client.containers.get(created["Id"])

    def put_archive(self, container: Any, data: bytes) -> None:
        """Unpack a tar (paths relative to /) into the container, created or running."""
        with self._call(f"copy files into {container.name}"):
            if not container.put_archive("/", data):
                raise EngineError(f"copy files into {container.name}", "the engine refused the archive")

    def start(self, container: Any) -> None:
        with self._call(f"start {container.name}"):
            container.start()

    def stop(self, container: Any, timeout: int = STOP_TIMEOUT) -> None:
        with self._call(f"stop {container.name}", missing_ok=True):
            container.stop(timeout=timeout)

    def remove(self, container: Any) -> None:
        with self._call(f"remove {container.name}", missing_ok=True):
            container.remove(force=True, v=False)

    def signal(self, container: Any, signal: str) -> None:
        with self._call(f"send {signal} to {container.name}"):
            container.kill(signal=signal)

    def state(self, container: Any) -> tuple[str, int | None]:
        """(status, exit code) as the engine sees the container now."""
        try:
            container.reload()
        except NotFound:
            return "removed", None
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"inspect container {container.name}", _reason(exc)) from exc
        state = container.attrs.get("State", {})
        code = state.get("ExitCode")
        return str(state.get("Status", "unknown")), int(code) if code is not None else None

    def logs(self, container: Any, tail: int = 30) -> str:
        try:
            data = container.logs(stdout=True, stderr=True, tail=tail)
        except (APIError, DockerException, requests.RequestException) as exc:
            return f"(logs unavailable: {_reason(exc)})"
        return bytes(data).decode("utf-8", "replace").rstrip("\n")

    def stream_logs(self, container: Any, *, follow: bool, tail: int) -> Iterator[str]:
        """Log lines as they come (stdout and stderr interleaved)."""
        with self._call(f"logs of {container.name}"):
            chunks = container.logs(stdout=True, stderr=True, stream=True, follow=follow, tail=tail)
        pending = b""
        for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace")
        if pending:
            yield pending.decode("utf-8", "replace")


def _reason(exc: BaseException) -> str:
    """What the engine (or the connection) said, in one line."""
    if isinstance(exc, APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        return str(explanation or exc).strip()
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]
