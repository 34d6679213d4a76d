"""What every runtime offers, and the status values they report."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ecokit.paths import StackPaths
from ecokit.services.spec import ServiceSpec

ServiceState = Literal["running", "stopped", "exited", "unavailable", "unhealthy"]
Action = Literal["started", "restarted", "reloaded", "unchanged", "skipped", "stopped", "removed"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: ServiceState
    description: str = ""
    pid: int | None = None
    container: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    log: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ServiceEvent:
    """Progress of `up`/`down`/`restart`, for the CLI to show as it happens."""

    service: str
    phase: Literal["starting", "waiting", "ready", "unchanged", "stopping", "stopped", "skipped",
                   "provisioning", "pulling", "reloading", "building"]
    detail: str = ""


Progress = Callable[[ServiceEvent], None]
OnReady = Callable[[ServiceSpec], None]


def no_progress(event: ServiceEvent) -> None:
    return None


@dataclass(frozen=True)
class ReadinessContext:
    """What probes need that is not in the spec: the CA, and a client cert for mTLS."""

    host: str
    ca_file: Path | None = None
    client_cert: tuple[Path, Path] | None = None


class Runtime(Protocol):
    name: str

    def up(self, plan: Sequence[ServiceSpec], *, on_ready: OnReady, progress: Progress) -> dict[str, Action]:
        """Start what is not running, restart what changed, leave the rest; idempotent."""
        ...

    def down(self, *, purge: bool, progress: Progress) -> list[str]:
        """Stop every service of this stack (and delete its data with ``purge``)."""
        ...

    def status(self, plan: Sequence[ServiceSpec]) -> list[ServiceStatus]:
        ...

    def restart(self, plan: Sequence[ServiceSpec], services: Sequence[str], *, on_ready: OnReady,
                progress: Progress) -> None:
        ...

    def logs(self, service: str, *, follow: bool, tail: int) -> Iterator[str]:
        ...

    def is_up(self) -> bool:
        """Whether any service of this stack is recorded as started."""
        ...


def save_state(paths: StackPaths, state: dict[str, Any]) -> None:
    """Write state.json atomically (a crash never leaves half a file)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, paths.state_file)


@contextlib.contextmanager
def locked_state(paths: StackPaths, load: Callable[[], dict[str, Any]], *,
                 keep: bool = False) -> Iterator[dict[str, Any]]:
    """Serialise up/down/restart of one stack across processes (a lock file) and yield its
    state, saved on exit; state.json is removed once no service is recorded, unless ``keep``."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        state = load()
        try:
            yield state
        finally:
            if state["services"] or keep:
                save_state(paths, state)
            else:
                paths.state_file.unlink(missing_ok=True)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
