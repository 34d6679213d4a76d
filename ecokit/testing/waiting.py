"""Polling for a condition with a deadline, for tests of systems that settle asynchronously."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.2) -> T:
    """Call ``check`` until it returns something truthy and return that; on timeout raise
    AssertionError naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
