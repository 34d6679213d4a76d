"""The docker lane: a Docker engine and locally built images for one test session.

Tests here are marked ``docker``. They run whenever an engine answers: the one DOCKER_HOST
names, else a private dockerd this session starts (root + docker.io) and stops by pid.
Images come from the distribution (debootstrap + docker import) and ``infra/Dockerfile``,
cached under ~/.cache/ecokit-tests (ECOKIT_TEST_CACHE) between runs. When no engine can
run, the tests are skipped with the reason, and the summary says so in one line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.errors import EcokitError
from ecokit.testing.docker_lane import DockerLane

ROOT = Path(__file__).resolve().parents[3]
_report: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)


_spent: list[float] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "integration/docker/" in report.nodeid:
        _spent.append(report.duration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _report:
        terminalreporter.write_line(f"docker lane: {line}")
    if _spent:
        terminalreporter.write_line(f"docker lane: {sum(_spent):.0f}s in docker tests (setup, calls and teardown, "
                                    "engine start and image builds included)")


@pytest.fixture(scope="session")
def docker_lane() -> Iterator[DockerLane]:
    started = time.monotonic()
    try:
        lane = DockerLane.open(dict(os.environ))
    except EcokitError as exc:
        reason = f"no Docker engine answers and none could be started: {exc}"
        _report.append(f"SKIPPED: {reason}")
        if os.environ.get("ECOKIT_REQUIRE_DOCKER") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        images = lane.build_images(ROOT)
    except BaseException as exc:
        lane.close()
        _report.append(f"FAILED to build test images: {exc}")
        raise
    _report.extend(lane.notes)
    _report.append(f"engine and images ready in {time.monotonic() - started:.0f}s "
                   f"(base {images.base}, ecokit {images.ecokit})")
    try:
        yield lane
    finally:
        lane.close()


@pytest.fixture
def docker_host(docker_lane: DockerLane, monkeypatch: pytest.MonkeyPatch) -> str:
    """DOCKER_HOST for this test (ecokit finds the engine the way the docker CLI does)."""
    monkeypatch.setenv("DOCKER_HOST", docker_lane.host)
    return docker_lane.host
