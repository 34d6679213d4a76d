"""The security suite: a hostile device's attacks (and a hostile-payload corpus) against the
real servers, each a regression test of a hole that was found (issue 10, docs/security.md).

Every module gets its own local stack (mosquitto + influxd + ecokit's services)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from security_support import DEVICES

from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    project = write_project(tmp_path_factory.mktemp("security"), devices=DEVICES, extra={
        "bridge": {"flush_ms": 50, "batch_size": 500},
        "processor": {"offline_after": 30, "status_interval": 0},
    })
    with running_stack(project) as running:
        yield running
