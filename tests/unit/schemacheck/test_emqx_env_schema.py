"""EMQX_* environment variables the docker runtime sets, mapped to settings by hocon's rule
(strip the prefix bin/emqx exports, lowercase, `__` is a dot) and checked against the schema."""

from __future__ import annotations

import re

import pytest
from schema_support import EMQX, StackMaker

from ecokit.schemacheck import report
from ecokit.schemacheck.emqx_env import check_env, env_path, env_value, override_prefix, script_variables
from ecokit.schemacheck.emqx_schema import EmqxSchema

BIN_EMQX = (EMQX / "bin-emqx").read_text()
ENTRYPOINT = (EMQX / "docker-entrypoint.sh").read_text()
SCRIPT_VARS = script_variables(BIN_EMQX, ENTRYPOINT)


def test_the_prefix_is_the_one_bin_emqx_exports() -> None:
    assert override_prefix(BIN_EMQX) == "EMQX_"


@pytest.mark.parametrize("profile", [None, "tls", "mtls"])
def test_the_broker_container_environment_maps_to_emqx_settings(make_stack: StackMaker, emqx_schema: EmqxSchema,
                                                                profile: str | None) -> None:
    spec = next(s for s in make_stack(profile=profile).plan("docker") if s.name == "broker")
    assert spec.container is not None
    env = spec.container.env
    assert env, "the broker container sets no EMQX_ variable: nothing to check"
    assert check_env(env, emqx_schema, prefix=override_prefix(BIN_EMQX), script_vars=SCRIPT_VARS) == []
    for name in env:
        path = env_path(name, "EMQX_")
        assert path is not None, name
        assert emqx_schema.field_at(path) is not None, name


def test_what_the_entrypoint_exports_itself_is_a_setting(emqx_schema: EmqxSchema) -> None:
    exported = dict(re.findall(r'export (EMQX_\w+__\w+)="\$\{\w+:-(\w+)\}"', ENTRYPOINT))
    assert exported == {"EMQX_RPC__PORT_DISCOVERY": "manual"}
    assert check_env(exported, emqx_schema) == []


@pytest.mark.parametrize(("name", "path"), [
    ("EMQX_NODE__NAME", ["node", "name"]),
    ("EMQX_LISTENERS__TCP__DEFAULT__BIND", ["listeners", "tcp", "default", "bind"]),
    ("EMQX_AUTHENTICATION__1__ENABLE", ["authentication", "1", "enable"]),
    ("EMQX___NODE____COOKIE", ["node", "cookie"]),
    ("MQTT_FOO", None), ("EMQX_", None),
])
def test_names_map_to_paths_by_hocons_rule(name: str, path: list[str] | None) -> None:
    assert env_path(name, "EMQX_") == path


@pytest.mark.parametrize(("text", "value"), [
    ("emqx@127.0.0.1", "emqx@127.0.0.1"), ("true", True), ("18083", 18083), ('"0.0.0.0:1883"', "0.0.0.0:1883"),
    ("1m", "1m"), ("{enable = false}", {"enable": False}), ("", ""),
])
def test_values_are_read_as_hocon_then_as_text(text: str, value: object) -> None:
    assert env_value(text) == value


@pytest.mark.parametrize(("env", "expected"), [
    ({"EMQX_NODE__NMAE": "emqx@127.0.0.1"}, "maps to node.nmae, which is no EMQX setting"),
    ({"EMQX_LISTENERS__TCP__DEFAULT__ENABLE_AUTHN": "maybe"}, "'maybe' is not one of true, false"),
    ({"EMQX_MQTT__MAX_INFLIGHT": "0"}, "0 is outside Integer(1..65535)"),
    ({"EMQX_RULE_ENGINE__RULES__R1__ENABLE": "yes"}, "expected true or false"),
    ({"EMQX_NODE_NMAE": "x"}, "maps to node_nmae, which is no EMQX setting"),
])
def test_env_check_refuses_what_emqx_would_ignore_or_refuse(emqx_schema: EmqxSchema, env: dict[str, str],
                                                            expected: str) -> None:
    found = report(check_env(env, emqx_schema, script_vars=SCRIPT_VARS))
    assert expected in found, found


def test_variables_the_scripts_read_are_not_settings_but_are_accepted(emqx_schema: EmqxSchema) -> None:
    env = {"EMQX_NODE_NAME": "emqx@10.0.0.1", "EMQX_HOST": "10.0.0.1", "EMQX_NAME": "emqx",
           "EMQX_LISTENERS__SSL__DEFAULT__ENABLE": "false", "EMQX_DASHBOARD__DEFAULT_PASSWORD": "pw", "PATH": "/bin"}
    assert check_env(env, emqx_schema, script_vars=SCRIPT_VARS) == []
