"""The load suite: ecokit bench scenarios with SLOs, as pytest tests (docs/bench.md).

Target: with ``BROKER_HOST``/``BROKER_PORT`` (credentials ``BROKER_USERNAME``/``BROKER_PASSWORD``)
or ``ECOKIT_BROKER_URL`` (CA: ``ECOKIT_BROKER_CA``) set, that broker; otherwise a local stack the
suite starts itself through ecokit (Mosquitto on free loopback ports, the bridge and the fleet
processor off so the figures are the broker's) and always tears down.

``QOS`` and ``PAYLOAD_SIZE`` apply to every scenario. ``ECOKIT_LOAD_SCALE`` multiplies every
duration and ``ECOKIT_LOAD_RATE`` every rate (the defaults fit a 2-core CI runner in under two
minutes); ``ECOKIT_LOAD_RESULTS=DIR`` keeps each test's result as JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from load_support import RESULTS_KEY, Bench, LoadTarget, factor, scaled_rates

from ecokit.bench import (
    BenchOptions,
    BenchResult,
    Overrides,
    apply_overrides,
    broker_from_env,
    find_scenario,
    overrides_from_env,
    parse_slo,
    run_bench,
    stack_target,
    url_target,
    validate_scenario,
)
from ecokit.testing import running_stack, write_project


@pytest.fixture(scope="session")
def load_target(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[LoadTarget]:
    env = dict(os.environ)
    overrides = overrides_from_env(env)
    scale, rate_scale = factor("ECOKIT_LOAD_SCALE"), factor("ECOKIT_LOAD_RATE")
    results = Path(env["ECOKIT_LOAD_RESULTS"]) if env.get("ECOKIT_LOAD_RESULTS") else None
    broker = broker_from_env(env)
    if broker is not None:
        target = url_target(broker.url, username=broker.username, password=broker.password, ca_file=broker.ca_file)
        yield LoadTarget(target, None, f"{target.description} (from {broker.source})", overrides, scale,
                         rate_scale, results)
        return
    request.getfixturevalue("server_binaries")  # mosquitto and influxd, or a clear failure
    folder = tmp_path_factory.mktemp("load-stack")
    config = write_project(folder, devices=20, stack="load",
                           extra={"bridge": {"enabled": False}, "processor": {"enabled": False}})
    with running_stack(config) as stack:
        target = stack_target(stack)
        yield LoadTarget(target, stack, f"{target.description}, a local Mosquitto started by ecokit", overrides,
                         scale, rate_scale, results)


@pytest.fixture
def bench(load_target: LoadTarget, request: pytest.FixtureRequest) -> Bench:
    """``bench(scenario, slos=[...], duration=.., rate=.., publishers=.., ...)`` runs it and returns the
    result; the environment's QOS and PAYLOAD_SIZE win over the test's own values."""

    def run(scenario: str | dict[str, object], *, slos: Sequence[str] = (), devices: int | None = None,
            options: BenchOptions | None = None, **changes: object) -> BenchResult:
        spec = find_scenario(scenario) if isinstance(scenario, str) else validate_scenario(scenario)
        name = scenario if isinstance(scenario, str) else request.node.name
        duration = changes.pop("duration", None)
        rate = changes.pop("rate", None)
        spec = apply_overrides(spec, Overrides(
            duration=float(duration) * load_target.scale if duration is not None else None,  # type: ignore[arg-type]
            rate=float(rate) * load_target.rate_scale if rate is not None else None,  # type: ignore[arg-type]
            **changes))  # type: ignore[arg-type]
        if load_target.scale != 1 and duration is None:
            spec = apply_overrides(spec, Overrides(duration=sum(p.seconds for p in spec.phases) * load_target.scale))
        if load_target.rate_scale != 1 and rate is None:
            spec = scaled_rates(spec, load_target.rate_scale)
        spec = apply_overrides(spec, load_target.env)
        target = load_target.target
        if devices is not None:
            if load_target.stack is None:
                pytest.skip("publishing as registered devices needs the suite's own stack")
            target = stack_target(load_target.stack, devices=devices)
        result = run_bench(name, spec, target, slos=[parse_slo(s) for s in slos], options=options)
        request.config.stash.setdefault(RESULTS_KEY, []).append((request.node.name, result))
        if load_target.results is not None:
            load_target.results.mkdir(parents=True, exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            (load_target.results / f"{safe}.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        return result

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    results = config.stash.get(RESULTS_KEY, [])
    if not results:
        return
    tr = terminalreporter
    tr.section("load scenarios")
    tr.write_line(f"target: {results[0][1].target}")
    tr.write_line(f"{'test':<44}{'sent':>9}{'recv/s':>9}{'lost':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  slo")
    for name, r in results:
        t = r.total
        lat = t.latency

        def ms(value: object) -> str:
            return f"{value:.2f}" if isinstance(value, float) else "-"

        tr.write_line(f"{name[:43]:<44}{t.sent:>9,}{(t.rate or 0):>9,.0f}{t.lost if t.lost is not None else '-':>7}"
                      f"{ms(lat.get('p50_ms')):>9}{ms(lat.get('p99_ms')):>9}{ms(lat.get('max_ms')):>9}  "
                      f"{'pass' if r.passed else 'FAIL'}")
