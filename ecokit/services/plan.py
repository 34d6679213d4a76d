"""The service plan: which services a stack runs, as a pure function of the configuration."""

from __future__ import annotations

from collections.abc import Callable

from ecokit.services.broker import broker
from ecokit.services.brokerstats import brokerstats
from ecokit.services.console import console
from ecokit.services.context import PlanContext
from ecokit.services.influxdb import influxdb
from ecokit.services.observability import grafana, prometheus
from ecokit.services.pipeline import bridge, processor
from ecokit.services.shadow import shadow
from ecokit.services.spec import ServiceSpec, ordered

# ecokit's own services (bridge, processor, shadow, ...): each builder returns its spec,
# or None when the configuration does not need it. They run after the broker and store.
EcokitServiceBuilder = Callable[[PlanContext], ServiceSpec | None]
ECOKIT_SERVICES: list[EcokitServiceBuilder] = []
ECOKIT_SERVICES += [bridge, processor, shadow, console, brokerstats]

# In the ecokit image (infra/Dockerfile) ecokit's services run as this uid:gid; the docker
# runtime places their files (0600 when secret) owned by it unless the spec says otherwise.
ECOKIT_IMAGE_USER = (10001, 10001)


def build_plan(ctx: PlanContext) -> list[ServiceSpec]:
    """Every service of the stack in start order."""
    plan = [broker(ctx), influxdb(ctx)]
    for builder in ECOKIT_SERVICES:
        spec = builder(ctx)
        if spec is not None:
            plan.append(spec)
    names = tuple(s.name for s in plan)
    if ctx.config.prometheus.enabled:
        plan.append(prometheus(ctx, names))
    if ctx.config.grafana.enabled:
        plan.append(grafana(ctx, with_prometheus=ctx.config.prometheus.enabled))
    return ordered(plan)
