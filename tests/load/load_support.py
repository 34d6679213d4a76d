"""What the load suite's fixtures and tests share. A module of its own: with tests/conftest.py
next to it, ``from conftest import ...`` could pick the wrong conftest."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecokit.bench import BenchResult, BenchTarget, Overrides, ScenarioSpec
from ecokit.stack import Stack

RESULTS_KEY = pytest.StashKey[list[tuple[str, BenchResult]]]()

Bench = Callable[..., BenchResult]


@dataclass
class LoadTarget:
    target: BenchTarget
    stack: Stack | None  # the stack the suite started (None: a broker from the environment)
    description: str
    env: Overrides  # QOS, PAYLOAD_SIZE
    scale: float
    rate_scale: float
    results: Path | None

    @property
    def own_stack(self) -> bool:
        return self.stack is not None


def factor(name: str) -> float:
    """A positive multiplier from the environment (1 when unset)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        raise pytest.UsageError(f"{name}={text!r}: expected a number such as 0.5 or 3") from None
    if value <= 0:
        raise pytest.UsageError(f"{name} must be positive")
    return value


def scaled_rates(spec: ScenarioSpec, by: float) -> ScenarioSpec:
    data = spec.model_dump()
    for phase in data["phases"]:
        for key in ("rate", "total_rate", "ramp_to"):
            if phase[key] is not None:
                phase[key] *= by
    return ScenarioSpec.model_validate(data)


def assert_slos(result: BenchResult) -> None:
    """Fail with one line per violated SLO, plus the figures that explain it."""
    if result.passed:
        return
    lines = [v.line for v in result.violations]
    for f in [*result.phases, result.total] if len(result.phases) > 1 else result.phases:
        lat = f.latency
        lines.append(f"  {f.name}: sent {f.sent:,}, received {f.unique:,}, lost {f.lost}, dup {f.duplicates}, "
                     f"{f.send_rate:,.0f}/s sent, p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, "
                     f"max {lat.get('max_ms')} ms, send lag p99 {f.send_lag.get('p99_ms')} ms")
    lines += [f"  warning: {w}" for w in result.warnings]
    pytest.fail("\n".join(lines), pytrace=False)
