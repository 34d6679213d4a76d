"""Runtimes run a service plan: ``local`` (processes) and ``docker`` (containers)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

RuntimeName = Literal["local", "docker"]


def _missing_unix_socket() -> bool:
    """Whether the engine's unix socket (DOCKER_HOST or the default) does not exist: no
    engine can answer, and asking would leave an unclosed socket behind in docker-py."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists()


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping through the usual environment (DOCKER_HOST)."""
    if _missing_unix_socket():
        return False
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=int(max(1, timeout)))
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def docker_runtime_installed() -> bool:
    return importlib.util.find_spec("ecokit.runtime.docker") is not None
