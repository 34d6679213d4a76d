"""ecokit's own suite runs the packaged conformance checks (ecokit/conformance/) here, so
`pytest tests/conformance` and the CI run keep them; the fixtures, options (--broker, ...)
and the summary table come from ecokit's pytest plugin. Users run the same checks with
`pytest --pyargs ecokit.conformance` or `ecokit conformance`."""

from ecokit.conformance.test_mqtt_conformance import test_broker_behaviour

__all__ = ["test_broker_behaviour"]
