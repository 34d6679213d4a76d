"""What ecokit renders for servers that cannot run here, checked against those servers' own
machine-readable schemas (a development tool: the test suite drives it).

EMQX 5.8, InfluxDB 2.7 and Grafana 12.4 only run in docker, and no image registry is
reachable on the machines ecokit is built on. Their configuration is therefore checked
against what they publish about themselves:

- ``emqx_schema``: EMQX's HOCON schema (the configuration manual's dump), hidden keys
  from the schema sources, and a walker over a parsed ``emqx.conf``;
- ``erlang_schema``: the ``rule_engine`` root, read from ``emqx_rule_engine_schema.erl``
  (the dump leaves hidden roots out);
- ``emqx_env``: ``EMQX_*`` environment overrides, mapped to schema paths by hocon's rule;
- ``openapi``: JSON Schema validation against OpenAPI 3.0 components and operations
  (EMQX's REST API, InfluxDB 2.7's contracts);
- ``influx``: the InfluxDB 2 image's entrypoint variables and the requests ecokit sends;
- ``grafana``: dashboards and panel options against Grafana's JSON Schemas, provisioning
  files against the keys Grafana reads.

Every checker returns a list of :class:`Problem` (empty when all is well); tests assert on
it. The schema files live in ``tests/data/schemas`` (sources and licences there): this
package needs the ``dev`` extra (``jsonschema``, ``pyhocon``) and ships no schema data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing a server's schema refuses: where (a dotted path or a file) and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def report(problems: list[Problem]) -> str:
    """Problems one per line, for assertion messages."""
    return "\n".join(str(p) for p in problems)


__all__ = ["Problem", "report"]
