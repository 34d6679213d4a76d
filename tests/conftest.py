"""Shared fixtures. Integration tests start real servers through these and always clean up."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project

# pytester: the tests of ecokit's own pytest plugin (tests/integration/test_pytest_plugin.py).
pytest_plugins = ("pytester",)

REQUIRED_BINARIES = {"mosquitto": "/usr/sbin/mosquitto", "influxd": "/usr/bin/influxd"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Folder decides the marker, so `-m "not integration"` gives the server-free unit run.
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        if "conformance" in path.parts:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.conformance)
        if "load" in path.parts:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.load)
        if "security" in path.parts:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.security)
        if "browser" in path.parts:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def server_binaries() -> None:
    """Integration tests need real servers; say clearly which one is missing."""
    missing = [name for name, path in REQUIRED_BINARIES.items()
               if shutil.which(name) is None and not Path(path).exists()]
    if missing:
        pytest.fail(f"integration tests need {', '.join(missing)} installed "
                    "(run infra/install.sh or apt-get install mosquitto influxdb)", pytrace=False)


ProjectFactory = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """Create a throwaway project with free ports; returns its ecokit.yaml."""
    counter = iter(range(1000))

    def factory(*, devices: int | list[str] = 3, extra: dict[str, Any] | None = None,
                users: list[dict[str, Any]] | None = None, stack: str = "test") -> Path:
        folder = tmp_path / f"project{next(counter)}"
        return write_project(folder, devices=devices, extra=extra, users=users, stack=stack)

    return factory


@pytest.fixture
def project(make_project: ProjectFactory) -> Path:
    return make_project()


@pytest.fixture
def stack(project: Path) -> Stack:
    return Stack.load(project, env={})


@pytest.fixture
def running(project: Path, server_binaries: None) -> Iterator[Stack]:
    """The default local stack (mosquitto + influxd), up for one test, purged after."""
    with running_stack(project) as stack:
        yield stack


@pytest.fixture
def no_caller_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ECOKIT_* or load-test variables (BROKER_*, QOS, PAYLOAD_SIZE) from the caller's shell:
    commands under test read them."""
    for name in list(os.environ):
        if name.startswith(("ECOKIT_", "BROKER_")) or name in ("QOS", "PAYLOAD_SIZE"):
            monkeypatch.delenv(name)
