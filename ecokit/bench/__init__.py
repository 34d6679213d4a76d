"""Load scenarios with SLOs: ``ecokit bench`` and ``tests/load`` (docs/bench.md).

Pure parts (no I/O): ``scenario`` (built-ins, overrides, the send schedule, topics),
``slo`` (parsing, evaluation), ``payload`` (what each message carries), ``tracking``
(sequence numbers, latency histograms), ``results`` (reports → result, timeline).
I/O: ``publisher`` and ``subscriber`` (worker processes), ``signals`` ($SYS, broker
process), ``targets`` (stack, URL, environment), ``runner`` (:class:`Bench`, the coordinator).
"""

from ecokit.bench.results import BenchResult, Figures
from ecokit.bench.runner import Bench, BenchError, BenchOptions, Progress, run_bench
from ecokit.bench.scenario import (
    BUILTIN,
    Overrides,
    PhasePlan,
    apply_overrides,
    compile_phases,
    find_scenario,
    scenario_names,
    validate_scenario,
)
from ecokit.bench.slo import SloResult, evaluate, merge_slos
from ecokit.bench.targets import BenchTarget, broker_from_env, overrides_from_env, stack_target, url_target
from ecokit.config.bench import BenchConfig, PhaseSpec, ScenarioSpec
from ecokit.config.slo import METRICS, Slo, SloError, parse_slo

__all__ = [
    "BUILTIN",
    "METRICS",
    "Bench",
    "BenchConfig",
    "BenchError",
    "BenchOptions",
    "BenchResult",
    "BenchTarget",
    "Figures",
    "Overrides",
    "PhasePlan",
    "PhaseSpec",
    "Progress",
    "ScenarioSpec",
    "Slo",
    "SloError",
    "SloResult",
    "apply_overrides",
    "broker_from_env",
    "compile_phases",
    "evaluate",
    "find_scenario",
    "merge_slos",
    "overrides_from_env",
    "parse_slo",
    "run_bench",
    "scenario_names",
    "stack_target",
    "url_target",
    "validate_scenario",
]
