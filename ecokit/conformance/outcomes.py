"""How a check ends besides passing or failing.

A check returns (passed) or raises ``AssertionError`` (failed), :class:`Unsupported` (the
target does not do this, or does it in a documented broker-specific way: reported as an
expected failure with the reason, never hidden) or :class:`CannotRun` (the check could not
be made against this target: no TLS listener known, no restricted user given; reported as
skipped with the reason, never as a failure).
"""

from __future__ import annotations

from typing import Literal

Outcome = Literal["passed", "failed", "xfail", "skipped"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "xfail", "skipped")


class Unsupported(Exception):
    """The target does not support the behaviour (an expected failure, with the reason)."""


class CannotRun(Exception):
    """The check cannot be made against this target (skipped, with the reason)."""
