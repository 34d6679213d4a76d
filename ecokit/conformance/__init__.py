"""MQTT 3.1.1 / 5.0 conformance checks, against any broker.

One function per behaviour, named after the specification section it proves (``checks``),
grouped by spec area; a ``Target`` says where the broker is and who we are there.
``ecokit conformance`` runs them (``runner``), and so does ``pytest --pyargs
ecokit.conformance`` through ecokit's pytest plugin. docs/conformance.md has the details.

    from ecokit.conformance import CHECKS, Target, run_checks, url_targets

    report = run_checks(url_targets(Target.from_url("mqtt://localhost:1883")))
    print("\\n".join(report.summary_lines()))
"""

from ecokit.conformance.checks import AREAS, CHECKS, Check
from ecokit.conformance.outcomes import CannotRun, Outcome, Unsupported
from ecokit.conformance.runner import BUNDLED_XFAILS, CheckResult, ConformanceReport, run_checks, run_one, select
from ecokit.conformance.stacks import (
    Targets,
    bundled_targets,
    check_reachable,
    running_stack_targets,
    stack_target,
    url_targets,
)
from ecokit.conformance.target import Credentials, Target

__all__ = [
    "AREAS",
    "BUNDLED_XFAILS",
    "CHECKS",
    "CannotRun",
    "Check",
    "CheckResult",
    "ConformanceReport",
    "Credentials",
    "Outcome",
    "Target",
    "Targets",
    "Unsupported",
    "bundled_targets",
    "check_reachable",
    "run_checks",
    "run_one",
    "running_stack_targets",
    "select",
    "stack_target",
    "url_targets",
]
