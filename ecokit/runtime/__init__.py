"""Runtimes run a service plan: ``local`` (processes) and ``docker`` (containers)."""

from __future__ import annotations

import importlib.util
from typing import Literal

RuntimeName = Literal["local", "docker"]


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping through the usual environment (DOCKER_HOST)."""
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
