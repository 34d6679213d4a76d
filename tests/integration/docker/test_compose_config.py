"""`docker compose config` reads what `ecokit compose` writes (where the v2 plugin exists)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ecokit.cli import main


def test_docker_compose_config_accepts_the_compose_file(make_project: Callable[..., Path]) -> None:
    try:
        found = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no docker CLI: {exc}")
    if found.returncode != 0:
        pytest.skip("no `docker compose` v2 plugin (Debian bookworm packages none; its docker-compose 1.29 "
                    "predates inline `content` configs): tests/unit/services/test_compose_and_dashboards.py "
                    "checks the file against the Compose Specification's schema instead")
    config = make_project(extra={"prometheus": {"enabled": True}, "grafana": {"enabled": True}})
    assert main(["compose", "-c", str(config)]) == 0
    checked = subprocess.run(["docker", "compose", "-f", str(config.parent / "docker-compose.yml"), "config", "-q"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
