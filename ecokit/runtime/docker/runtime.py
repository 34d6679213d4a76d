"""The docker runtime: the stack's services as containers on one network per stack.

Every container, network and volume carries ``ecokit.stack=<name>`` (and containers and
volumes ``ecokit.service``), so ``down`` finds everything by label, even after a crash
or a lost state file. ``.ecokit/<stack>/state.json`` records ``{"runtime": "docker"}``
so later commands know where the stack runs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecokit.certs import CertPaths
from ecokit.errors import EcokitError, EngineError, RuntimeUnavailable, ServiceError
from ecokit.paths import StackPaths
from ecokit.resources import package_root
from ecokit.runtime.base import (
    Action,
    OnReady,
    Progress,
    ReadinessContext,
    ServiceEvent,
    ServiceStatus,
    locked_state,
    no_progress,
    save_state,
)
from ecokit.runtime.docker.engine import Engine, PullProgress
from ecokit.runtime.docker.service import (
    LABEL_FINGERPRINT,
    LABEL_SERVICE,
    ContainerFile,
    StackNames,
    container_config,
    container_files,
    fingerprint,
    project_label,
    tar_files,
    volume_roots,
)
from ecokit.runtime.probes import wait_ready
from ecokit.services.spec import ServiceSpec, ordered

LOG_TAIL = 30
DOCKERFILE = "infra/Dockerfile"


def ecokit_source_tree() -> Path | None:
    """The repository this ecokit runs from, when it is a source checkout with infra/Dockerfile."""
    root = package_root()
    return root if (root / DOCKERFILE).is_file() and (root / "pyproject.toml").is_file() else None


@dataclass(frozen=True)
class DockerSettings:
    """What the docker runtime needs to know of a stack beyond its plan."""

    paths: StackPaths
    stack: str  # the stack's name (labels, container and network names)
    project_dir: Path
    cert_paths: CertPaths  # certificates placed into containers
    tls: bool  # the stack's profile has TLS: the certificates must exist
    bind: str  # host address published ports bind
    ecokit_image: str  # built from the source tree when missing


class DockerRuntime:
    name = "docker"

    def __init__(self, settings: DockerSettings, readiness: ReadinessContext, *,
                 engine: Engine | None = None) -> None:
        self.settings = settings
        self.paths = settings.paths
        self.readiness = readiness
        self.names = StackNames(settings.stack, project_label(settings.project_dir))
        self._engine = engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine.connect()
        return self._engine

    # -- state -------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.paths.state_file.read_text())
        except FileNotFoundError:
            return {"runtime": self.name, "services": {}}
        except ValueError:
            # The containers are the truth; the file only says where the stack runs.
            return {"runtime": self.name, "services": {}}
        if data.get("runtime") != self.name:
            # A stopped local stack leaves nothing behind that matters to docker.
            return {"runtime": self.name, "services": {}}
        data.setdefault("services", {})
        return data

    def _save(self, state: dict[str, Any]) -> None:
        save_state(self.paths, state)

    def _locked(self, *, keep: bool) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Serialise up/down/restart of this stack. ``keep``: leave state.json behind even
        when no service is recorded (up writes it before anything starts)."""
        return locked_state(self.paths, self._load, keep=keep)

    def _stack_containers(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for container in self.engine.containers(self.names.selector):
            service = container.labels.get(LABEL_SERVICE)
            if service:
                found[service] = container
        return found

    def is_up(self) -> bool:
        try:
            return any(c.status == "running" for c in self._stack_containers().values())
        except (RuntimeUnavailable, EcokitError):
            return False

    # -- lifecycle ---------------------------------------------------------------------

    def up(self, plan: Sequence[ServiceSpec], *, on_ready: OnReady,
           progress: Progress = no_progress) -> dict[str, Action]:
        actions: dict[str, Action] = {}
        with self._locked(keep=True) as state:
            # Recorded first: post-start steps (InfluxDB users) ask where the stack runs.
            self._save(state)
            services: dict[str, Any] = state["services"]
            images = self._ensure_images(plan, progress)
            self.engine.ensure_network(self.names.network, self.names.labels())
            existing = self._stack_containers()
            wanted = {s.name for s in plan}
            for name in [n for n in existing if n not in wanted]:
                progress(ServiceEvent(name, "stopping", "no longer in the plan"))
                self._discard(existing.pop(name))
                services.pop(name, None)
                actions[name] = "removed"
                progress(ServiceEvent(name, "stopped"))
            for spec in ordered(plan):
                if spec.container is None:
                    progress(ServiceEvent(spec.name, "skipped", "has no container image"))
                    actions[spec.name] = "skipped"
                    continue
                actions[spec.name] = self._ensure(spec, images[spec.container.image], existing.get(spec.name),
                                                  services, on_ready, progress)
        return actions

    def _ensure_images(self, plan: Sequence[ServiceSpec], progress: Progress) -> dict[str, str]:
        """Every image of the plan present (pulled with progress when missing): ref -> id."""
        images: dict[str, str] = {}
        for spec in plan:
            if spec.container is None or spec.container.image in images:
                continue
            ref = spec.container.image
            service = spec.name

            def report(p: PullProgress, service: str = service) -> None:
                progress(ServiceEvent(service, "pulling", p.describe()))

            if self.engine.image_id(ref) is None:
                source = ecokit_source_tree()
                if ref == self.settings.ecokit_image and source is not None:
                    images[ref] = self._build_ecokit_image(ref, source, service, progress)
                    continue
                progress(ServiceEvent(service, "pulling", ref))
            try:
                images[ref] = self.engine.ensure_image(ref, report)
            except EngineError as exc:
                if ref == self.settings.ecokit_image:
                    exc.hint = (f"the ecokit image is built from ecokit's repository: "
                                f"docker build -f infra/Dockerfile -t {ref} .")
                raise
        return images

    def _build_ecokit_image(self, ref: str, source: Path, service: str, progress: Progress) -> str:
        """ecokit's own services need the ecokit image; from a source checkout, build it."""
        progress(ServiceEvent(service, "building", f"{ref} from {source / DOCKERFILE}"))
        return self.engine.build(source, DOCKERFILE, ref,
                                 progress=lambda step: progress(ServiceEvent(service, "building", f"{ref}: {step}")))

    def _files(self, spec: ServiceSpec) -> list[ContainerFile]:
        return container_files(spec, self.settings.cert_paths, certs_required=self.settings.tls)

    def _ensure(self, spec: ServiceSpec, image_id: str, container: Any | None, services: dict[str, Any],
                on_ready: OnReady, progress: Progress) -> Action:
        files = self._files(spec)
        wanted = fingerprint(spec, image_id, files)
        running = False
        if container is not None:
            status, _ = self.engine.state(container)
            running = status == "running"
            if running and container.labels.get(LABEL_FINGERPRINT) == wanted:
                return self._keep(spec, container, services, progress)
            progress(ServiceEvent(spec.name, "stopping",
                                  "configuration changed" if running else f"container {status}"))
            self._discard(container)
            services.pop(spec.name, None)
        self._start(spec, wanted, files, services, on_ready, progress)
        return "restarted" if running else "started"

    def _keep(self, spec: ServiceSpec, container: Any, services: dict[str, Any], progress: Progress) -> Action:
        """A running container whose configuration did not change: leave it, or reload the
        files the service re-reads on a signal (Mosquitto's passwd and acl on SIGHUP)."""
        content = spec.content_fingerprint()
        entry = services.setdefault(spec.name, {"container": container.id,
                                                "fingerprint": container.labels.get(LABEL_FINGERPRINT)})
        if entry.get("content") != content and spec.reload_signal and spec.reloadable:
            progress(ServiceEvent(spec.name, "reloading", ", ".join(spec.reloadable)))
            reload_files = container_files(spec, self.settings.cert_paths, certs_required=False,
                                           only=spec.reloadable)
            self.engine.put_archive(container, tar_files(reload_files))
            self.engine.signal(container, spec.reload_signal)
            entry["content"] = content
            progress(ServiceEvent(spec.name, "ready", f"{container.name}, reloaded"))
            return "reloaded"
        entry["content"] = content
        progress(ServiceEvent(spec.name, "unchanged", container.name))
        return "unchanged"

    def _start(self, spec: ServiceSpec, wanted: str, files: list[ContainerFile], services: dict[str, Any],
               on_ready: OnReady, progress: Progress) -> None:
        assert spec.container is not None
        for volume in spec.volumes:
            self.engine.ensure_volume(self.names.volume(spec.name, volume.name),
                                      self.names.labels(spec.name, **{"ecokit.volume": volume.name}))
        config = container_config(spec, self.names, bind=self.settings.bind,
                                  extra_labels={LABEL_FINGERPRINT: wanted})
        progress(ServiceEvent(spec.name, "starting", f"{config.name} ({config.image})"))
        container = self.engine.create_container(config)
        # Recorded before waiting, so `down` and `logs` find it even if readiness fails.
        services[spec.name] = {"container": container.id, "fingerprint": wanted,
                               "content": spec.content_fingerprint(), "image": config.image}
        self._save({"runtime": self.name, "services": services})
        # Before start, so the service finds its files (and its volumes writable) at once.
        placed = volume_roots(spec) + files
        if placed:
            self.engine.put_archive(container, tar_files(placed))
        self.engine.start(container)
        progress(ServiceEvent(spec.name, "waiting", spec.probe.kind if spec.probe else ""))

        def alive() -> str | None:
            status, code = self.engine.state(container)
            if status in ("running", "created", "restarting"):
                return None
            return f"container {status}" + (f" with exit code {code}" if code is not None else "")

        try:
            wait_ready(spec, self.readiness.host, ca_file=self.readiness.ca_file,
                       client_cert=self.readiness.client_cert, alive=alive,
                       log_tail=lambda: self.engine.logs(container, LOG_TAIL))
            if spec.post_start:
                progress(ServiceEvent(spec.name, "provisioning", ", ".join(spec.post_start)))
            on_ready(spec)
        except BaseException:
            # Stopped, not removed: `ecokit logs` still shows what happened; `up` recreates it.
            with contextlib.suppress(EcokitError):
                self.engine.stop(container, timeout=5)
            raise
        progress(ServiceEvent(spec.name, "ready", config.name))

    def _discard(self, container: Any) -> None:
        self.engine.stop(container)
        self.engine.remove(container)

    def down(self, *, purge: bool = False, progress: Progress = no_progress) -> list[str]:
        stopped: list[str] = []
        with self._locked(keep=False) as state:
            services: dict[str, Any] = state["services"]
            containers = self._stack_containers()
            # Reverse start order: clients of the broker and the store go first.
            order = [n for n in reversed(list(services)) if n in containers]
            order += sorted(n for n in containers if n not in order)
            for name in order:
                container = containers[name]
                progress(ServiceEvent(name, "stopping", container.name))
                if container.status == "running":
                    stopped.append(name)
                self._discard(container)
                progress(ServiceEvent(name, "stopped"))
            services.clear()
            for network in self.engine.networks(self.names.selector):
                self.engine.remove_network(network)
            if purge:
                for volume in self.engine.volumes(self.names.selector):
                    self.engine.remove_volume(volume)
        return stopped

    def restart(self, plan: Sequence[ServiceSpec], services: Sequence[str], *, on_ready: OnReady,
                progress: Progress = no_progress) -> None:
        by_name = {s.name: s for s in plan}
        unknown = [s for s in services if s not in by_name]
        if unknown:
            raise ServiceError(unknown[0], f"no such service; the stack has {', '.join(by_name)}")
        with self._locked(keep=True) as state:
            recorded: dict[str, Any] = state["services"]
            images = self._ensure_images(plan, progress)
            self.engine.ensure_network(self.names.network, self.names.labels())
            existing = self._stack_containers()
            targets = [s for s in ordered(plan) if s.container is not None and (not services or s.name in services)]
            for spec in reversed(targets):
                if spec.name in existing:
                    progress(ServiceEvent(spec.name, "stopping"))
                    self._discard(existing.pop(spec.name))
                    recorded.pop(spec.name, None)
            for spec in targets:
                assert spec.container is not None
                self._ensure(spec, images[spec.container.image], None, recorded, on_ready, progress)

    # -- inspection --------------------------------------------------------------------

    def status(self, plan: Sequence[ServiceSpec]) -> list[ServiceStatus]:
        try:
            containers = self._stack_containers()
        except RuntimeUnavailable as exc:
            return [ServiceStatus(s.name, "unavailable", s.description, detail=str(exc)) for s in plan]
        out = []
        for spec in plan:
            ports = {p.name: p.host for p in spec.ports}
            container = containers.get(spec.name)
            if spec.container is None:
                out.append(ServiceStatus(spec.name, "unavailable", spec.description, ports=ports,
                                         detail="has no container image"))
                continue
            if container is None:
                out.append(ServiceStatus(spec.name, "stopped", spec.description, ports=ports))
                continue
            state = container.attrs.get("State", {})
            if container.status == "running":
                detail = ""
                image_id = self.engine.image_id(spec.container.image) or ""
                wanted = fingerprint(spec, image_id, self._files_or_empty(spec))
                if container.labels.get(LABEL_FINGERPRINT) != wanted:
                    detail = "configuration changed; `ecokit up` recreates it"
                out.append(ServiceStatus(spec.name, "running", spec.description, pid=state.get("Pid") or None,
                                         container=container.name, ports=ports, detail=detail))
            else:
                last = self.engine.logs(container, 1)
                code = state.get("ExitCode")
                out.append(ServiceStatus(spec.name, "exited", spec.description, container=container.name,
                                         ports=ports, detail=f"exit code {code}: {last}".strip()))
        return out

    def _files_or_empty(self, spec: ServiceSpec) -> list[ContainerFile]:
        try:
            return self._files(spec)
        except EcokitError:
            return []

    def logs(self, service: str, *, follow: bool = False, tail: int = 50) -> Iterator[str]:
        container = self.engine.container(self.names.container(service))
        if container is None:
            raise ServiceError(service, f"has no container ({self.names.container(service)}); is the stack up?")
        yield from self.engine.stream_logs(container, follow=follow, tail=tail)
