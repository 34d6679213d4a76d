"""MQTT 3.1.1 / 5.0 conformance: every check in mqtt_checks against the target broker.

    pytest tests/conformance                              # a stack ecokit starts (mosquitto)
    pytest tests/conformance --broker mqtts://u:p@host:8883 --broker-ca ca.pem
    ECOKIT_BROKER_URL=ws://host:8083/mqtt pytest tests/conformance
"""

from __future__ import annotations

import pytest
from broker_target import Target
from mqtt_checks import CHECKS, Check


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_broker_behaviour(check: Check, target: Target, request: pytest.FixtureRequest) -> None:
    if check.needs == "mtls":
        check(request.getfixturevalue("mtls_target"))
    else:
        check(target)
