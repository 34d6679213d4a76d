"""MQTT 3.1.1 / 5.0 conformance under pytest: every check against the broker under test.

    pytest --pyargs ecokit.conformance                          # a Mosquitto ecokit starts for the run
    pytest --pyargs ecokit.conformance --broker mqtts://u:p@host:8883 --broker-ca ca.pem
    pytest --pyargs ecokit.conformance -k session --junitxml conformance.xml

The fixture ``conformance_targets`` and the options come from ecokit's pytest plugin; the
run ends with the table by spec area. ``ecokit conformance`` runs the same checks.
"""

from __future__ import annotations

import pytest

from ecokit.conformance import CHECKS, CannotRun, Check, Targets, Unsupported, run_one

pytestmark = pytest.mark.conformance


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_broker_behaviour(check: Check, conformance_targets: Targets) -> None:
    try:
        run_one(check, conformance_targets)
    except Unsupported as exc:
        pytest.xfail(str(exc))
    except CannotRun as exc:
        pytest.skip(str(exc))
