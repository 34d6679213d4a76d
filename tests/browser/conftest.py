"""Fixtures of the console page tests: one real stack (mosquitto, influxd, bridge, processor,
shadow service, console) with the simulator driving a small fleet, a real tile server, and one
headless Chromium, shared by the tests of a module to keep the suite lean."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_support import FLEET, ConsolePage, TileServer, chromium

from ecokit.console.client import ConsoleEndpoint
from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project
from ecokit.testing.simulation import simulating
from ecokit.testing.waiting import wait_for


@pytest.fixture(scope="module")
def tiles() -> Iterator[TileServer]:
    server = TileServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory, tiles: TileServer,
                  server_binaries: None) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("console-page")
    config = write_project(folder, devices=FLEET, extra={
        "console": {"tiles": {"url": tiles.url, "attribution": "test tiles by ecokit"}}})
    with running_stack(config) as stack, simulating(config, FLEET, seed=12, duration="30m"):
        yield stack


@pytest.fixture(scope="module")
def endpoint(console_stack: Stack) -> ConsoleEndpoint:
    ep = console_stack.console_endpoint()
    assert ep is not None, "the test stack has no console"
    return ep


@pytest.fixture(scope="module")
def page(endpoint: ConsoleEndpoint) -> Iterator[ConsolePage]:
    with chromium() as driver:
        console = ConsolePage(driver, endpoint.url, endpoint.token)
        # Every simulated vehicle reported a position before any test looks at the page.
        wait_for(f"{FLEET} vehicles in the console", lambda: len(console.vehicles()) == FLEET, timeout=60)
        yield console

