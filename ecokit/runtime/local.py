"""The local runtime: the stack's services as detached processes on this machine.

State (pids with their start times, config fingerprints) lives in
``.ecokit/<stack>/state.json``; logs in ``.ecokit/<stack>/logs/<service>.log``; data in
``.ecokit/<stack>/data/<service>/``. Only processes recorded there are ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ecokit.errors import EcokitError, PortInUse, RuntimeUnavailable, ServiceError
from ecokit.paths import StackPaths
from ecokit.resources import package_root
from ecokit.runtime import process
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
from ecokit.runtime.probes import wait_ready
from ecokit.services.spec import LocalCommand, ServiceSpec, ordered

# Services a stack can run without; the local runtime skips them when their binary is missing.
OPTIONAL_ROLES = ("dashboard", "metrics")


def find_binary(command: LocalCommand) -> str | None:
    if command.python:
        return sys.executable
    found = shutil.which(command.binary)
    if found:
        return found
    for folder in command.search:
        candidate = Path(folder) / command.binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class LocalRuntime:
    name = "local"

    def __init__(self, paths: StackPaths, readiness: ReadinessContext) -> None:
        self.paths = paths
        self.readiness = readiness

    # -- state -------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.paths.state_file.read_text())
        except FileNotFoundError:
            return {"runtime": self.name, "services": {}}
        except ValueError as exc:
            raise EcokitError(f"{self.paths.state_file} is corrupt ({exc})",
                              hint="stop the processes listed in it by pid, then delete it") from exc
        if data.get("runtime") not in (None, self.name):
            raise EcokitError(f"this stack runs on the {data['runtime']} runtime, not {self.name}")
        return data

    def _save(self, state: dict[str, Any]) -> None:
        save_state(self.paths, state)

    def _locked(self) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Serialise up/down/restart of this stack; yields the state, saved on exit."""
        return locked_state(self.paths, self._load)

    @staticmethod
    def _ref(entry: dict[str, Any]) -> process.ProcessRef:
        return process.ProcessRef(int(entry["pid"]), int(entry["start_ticks"]))

    def is_up(self) -> bool:
        return any(process.is_alive(self._ref(e)) for e in self._load()["services"].values())

    def running_pid(self, service: str) -> int | None:
        """The pid of ``service`` while the process recorded for it runs (no plan needed)."""
        entry = self._load()["services"].get(service)
        if entry is None:
            return None
        ref = self._ref(entry)
        return ref.pid if process.is_alive(ref) else None

    # -- lifecycle ---------------------------------------------------------------------

    def up(self, plan: Sequence[ServiceSpec], *, on_ready: OnReady,
           progress: Progress = no_progress) -> dict[str, Action]:
        actions: dict[str, Action] = {}
        with self._locked() as state:
            services: dict[str, Any] = state["services"]
            wanted = {s.name for s in plan}
            for name in [n for n in services if n not in wanted]:
                progress(ServiceEvent(name, "stopping", "no longer in the plan"))
                process.stop(self._ref(services.pop(name)))
                actions[name] = "removed"
            self._preflight(plan, services)
            for spec in ordered(plan):
                actions[spec.name] = self._ensure(spec, services, on_ready, progress)
        return actions

    def _preflight(self, plan: Sequence[ServiceSpec], services: dict[str, Any]) -> None:
        """Fail before starting anything when a service that must start cannot: its binary
        is missing or one of its ports is taken (a half-started stack helps nobody)."""
        host = self.readiness.host
        for spec in ordered(plan):
            entry = services.get(spec.name)
            if entry and process.is_alive(self._ref(entry)):
                continue
            if spec.local is None or find_binary(spec.local) is None:
                if spec.role in OPTIONAL_ROLES:
                    continue
                raise RuntimeUnavailable(f"{spec.name}: {self._unavailable_reason(spec)}",
                                         hint=spec.local.install_hint if spec.local else None)
            for port in spec.ports:
                if not process.port_is_free(host, port.host):
                    raise PortInUse(spec.name, port.host, host, holder=process.port_holder(port.host))

    def _ensure(self, spec: ServiceSpec, services: dict[str, Any], on_ready: OnReady,
                progress: Progress) -> Action:
        entry = services.get(spec.name)
        fingerprint = spec.fingerprint()
        if entry and process.is_alive(self._ref(entry)):
            if entry.get("fingerprint") == fingerprint:
                content = spec.content_fingerprint()
                if entry.get("content") not in (None, content) and spec.reload_signal:
                    progress(ServiceEvent(spec.name, "reloading", ", ".join(spec.reloadable)))
                    process.signal_process(self._ref(entry), spec.reload_signal)
                    entry["content"] = content
                    progress(ServiceEvent(spec.name, "ready", f"pid {entry['pid']}, reloaded"))
                    return "reloaded"
                entry["content"] = content
                progress(ServiceEvent(spec.name, "unchanged", f"pid {entry['pid']}"))
                return "unchanged"
            progress(ServiceEvent(spec.name, "stopping", "configuration changed"))
            process.stop(self._ref(entry))
            services.pop(spec.name)
            self._start(spec, services, on_ready, progress)
            return "restarted"
        services.pop(spec.name, None)
        if spec.local is None or find_binary(spec.local) is None:
            reason = self._unavailable_reason(spec)
            if spec.role in OPTIONAL_ROLES:
                progress(ServiceEvent(spec.name, "skipped", reason))
                return "skipped"
            raise RuntimeUnavailable(f"{spec.name}: {reason}",
                                     hint=spec.local.install_hint if spec.local else None)
        self._start(spec, services, on_ready, progress)
        return "started"

    @staticmethod
    def _unavailable_reason(spec: ServiceSpec) -> str:
        if spec.local is None:
            return "cannot run as a local process"
        hint = f" ({spec.local.install_hint})" if spec.local.install_hint else ""
        return f"`{spec.local.binary}` is not installed{hint}"

    def _argv(self, command: LocalCommand) -> list[str]:
        binary = find_binary(command)
        assert binary is not None
        if command.python:
            return [binary, "-m", command.binary, *command.args]
        return [binary, *command.args]

    def _env(self, command: LocalCommand) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        if command.python:
            # Children import this very ecokit, wherever it was imported from.
            env["PYTHONPATH"] = str(package_root())
            env["PYTHONUNBUFFERED"] = "1"
        env.update(command.env)
        return env

    def _start(self, spec: ServiceSpec, services: dict[str, Any], on_ready: OnReady,
               progress: Progress) -> None:
        assert spec.local is not None
        host = self.readiness.host
        for port in spec.ports:
            if not process.port_is_free(host, port.host):
                raise PortInUse(spec.name, port.host, host, holder=process.port_holder(port.host))
        for volume in spec.volumes:
            self.paths.service_data(spec.name).joinpath(volume.name).mkdir(parents=True, exist_ok=True)
        log_path = self.paths.log(spec.name)
        cwd = self.paths.service_data(spec.name)
        cwd.mkdir(parents=True, exist_ok=True)
        argv = self._argv(spec.local)
        progress(ServiceEvent(spec.name, "starting", " ".join(argv)))
        ref = process.spawn(argv, log_path=log_path, cwd=cwd, env=self._env(spec.local))
        # Record the process before waiting, so `down` finds it even if readiness fails.
        services[spec.name] = {"pid": ref.pid, "start_ticks": ref.start_ticks,
                               "fingerprint": spec.fingerprint(), "content": spec.content_fingerprint(),
                               "argv": argv}
        self._save({"runtime": self.name, "services": services})
        progress(ServiceEvent(spec.name, "waiting", spec.probe.kind if spec.probe else ""))
        try:
            wait_ready(spec, host, ca_file=self.readiness.ca_file, client_cert=self.readiness.client_cert,
                       alive=lambda: None if process.is_alive(ref) else process.exit_reason(ref),
                       log_tail=lambda: process.tail(log_path))
            if spec.post_start:
                progress(ServiceEvent(spec.name, "provisioning", ", ".join(spec.post_start)))
            on_ready(spec)
        except BaseException:
            process.stop(ref, timeout=5)
            services.pop(spec.name, None)
            raise
        progress(ServiceEvent(spec.name, "ready", f"pid {ref.pid}"))

    def down(self, *, purge: bool = False, progress: Progress = no_progress) -> list[str]:
        stopped = []
        with self._locked() as state:
            services: dict[str, Any] = state["services"]
            # Reverse start order: clients of the broker and store go first.
            for name in reversed(list(services)):
                progress(ServiceEvent(name, "stopping"))
                if process.stop(self._ref(services[name])):
                    stopped.append(name)
                services.pop(name)
                progress(ServiceEvent(name, "stopped"))
        if purge:
            shutil.rmtree(self.paths.data_dir, ignore_errors=True)
            shutil.rmtree(self.paths.logs_dir, ignore_errors=True)
        return stopped

    def restart(self, plan: Sequence[ServiceSpec], services: Sequence[str], *, on_ready: OnReady,
                progress: Progress = no_progress) -> None:
        by_name = {s.name: s for s in plan}
        unknown = [s for s in services if s not in by_name]
        if unknown:
            raise ServiceError(unknown[0], f"no such service; the stack has {', '.join(by_name)}")
        with self._locked() as state:
            running: dict[str, Any] = state["services"]
            targets = [s for s in ordered(plan) if not services or s.name in services]
            for spec in reversed(targets):
                if spec.name in running:
                    progress(ServiceEvent(spec.name, "stopping"))
                    process.stop(self._ref(running.pop(spec.name)))
            for spec in targets:
                self._ensure(spec, running, on_ready, progress)

    # -- inspection --------------------------------------------------------------------

    def status(self, plan: Sequence[ServiceSpec]) -> list[ServiceStatus]:
        services = self._load()["services"]
        out = []
        for spec in plan:
            ports = {p.name: p.host for p in spec.ports}
            log = str(self.paths.log(spec.name))
            entry = services.get(spec.name)
            if entry is None:
                if spec.local is None or find_binary(spec.local) is None:
                    out.append(ServiceStatus(spec.name, "unavailable", spec.description, ports=ports,
                                             detail=self._unavailable_reason(spec)))
                else:
                    out.append(ServiceStatus(spec.name, "stopped", spec.description, ports=ports, log=log))
                continue
            ref = self._ref(entry)
            if process.is_alive(ref):
                detail = "" if entry.get("fingerprint") == spec.fingerprint() else \
                    "configuration changed; `ecokit up` restarts it"
                out.append(ServiceStatus(spec.name, "running", spec.description, pid=ref.pid, ports=ports,
                                         log=log, detail=detail))
            else:
                out.append(ServiceStatus(spec.name, "exited", spec.description, pid=ref.pid, ports=ports,
                                         log=log, detail=process.tail(self.paths.log(spec.name), 1)))
        return out

    def logs(self, service: str, *, follow: bool = False, tail: int = 50) -> Iterator[str]:
        path = self.paths.log(service)
        if not path.exists():
            raise ServiceError(service, f"has no log yet ({path})",
                               hint="it has not run since the last `ecokit down --purge`: `ecokit up` starts it")
        if follow:
            yield from process.follow(path, tail_lines=tail)
        else:
            yield from process.tail(path, tail).splitlines()
