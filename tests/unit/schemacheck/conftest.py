"""Schemas of the servers that cannot run here (tests/data/schemas, sources in its README),
loaded once per session, and the stacks whose rendered files the tests check."""

from __future__ import annotations

from typing import Any

import pytest
from schema_support import EMQX, EMQX_API_READING, GRAFANA, INFLUX, USERS, StackMaker

from ecokit.schemacheck.emqx_schema import EmqxSchema
from ecokit.schemacheck.erlang_schema import rule_engine_root
from ecokit.schemacheck.grafana import GrafanaSchemas
from ecokit.schemacheck.influx import EntrypointFacts
from ecokit.schemacheck.openapi import OpenApi
from ecokit.stack import Stack
from ecokit.testing import write_project


@pytest.fixture(scope="session")
def emqx_schema() -> EmqxSchema:
    return EmqxSchema.load(EMQX / "hocon-ce-v5.8.1.schema.json",
                           extra_roots=rule_engine_root(EMQX / "emqx_rule_engine_schema.erl"))


@pytest.fixture(scope="session")
def emqx_api() -> OpenApi:
    return OpenApi.load(EMQX / "ce-5.8.1.openapi.json", EMQX_API_READING)


@pytest.fixture(scope="session")
def emqx_api_as_written() -> OpenApi:
    return OpenApi.load(EMQX / "ce-5.8.1.openapi.json")


@pytest.fixture(scope="session")
def influx_v1_api() -> OpenApi:
    return OpenApi.load(INFLUX / "swaggerV1Compat.yml")


@pytest.fixture(scope="session")
def influx_api() -> OpenApi:
    return OpenApi.load(INFLUX / "oss-2.7.subset.openapi.json")


@pytest.fixture(scope="session")
def influx_facts() -> EntrypointFacts:
    return EntrypointFacts.load(INFLUX / "docker-entrypoint-facts.json")


@pytest.fixture(scope="session")
def grafana_schemas() -> GrafanaSchemas:
    return GrafanaSchemas(GRAFANA)


@pytest.fixture(scope="session")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> StackMaker:
    """A stack from ecokit.yaml settings (and a profile); projects are throwaway folders."""
    def factory(*, profile: str | None = None, emqx: bool = True, **extra: Any) -> Stack:
        config = dict(extra)
        if emqx:
            config["broker"] = {"kind": "emqx", **config.get("broker", {})}
        folder = tmp_path_factory.mktemp("project")
        return Stack.load(write_project(folder, users=USERS, extra=config), profile=profile, env={})

    return factory
