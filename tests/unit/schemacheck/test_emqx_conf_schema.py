"""Every emqx.conf ecokit renders, walked through EMQX 5.8's own configuration schema and
its REST API's JSON Schemas: all profiles, both auth modes, default and custom rules,
docker and local paths, and the settings that change what is rendered."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from schema_support import CUSTOM_RULES, StackMaker

from ecokit.rules.sqlfuncs import function_calls, unknown_calls
from ecokit.schemacheck import Problem, report
from ecokit.schemacheck.emqx_schema import EmqxSchema, read_hocon
from ecokit.schemacheck.openapi import OpenApi
from ecokit.services.plan import build_plan
from ecokit.services.spec import ServiceSpec


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    profile: str | None = None
    anonymous: bool = False
    custom_rules: bool = False
    target: str = "docker"
    extra: tuple[tuple[str, Any], ...] = ()


CASES = [Case(f"{profile or 'default'}-{'anonymous' if anonymous else 'password'}-"
              f"{'custom' if custom else 'default'}-rules-{target}", profile, anonymous, custom, target)
         for profile in (None, "tls", "mtls") for anonymous in (False, True) for custom in (False, True)
         for target in ("docker", "local")]
CASES += [
    Case("tls13-no-plain-listener", "tls",
         extra=(("tls", {"enabled": True, "min_version": "1.3", "plain_listener": False}),)),
    Case("no-websockets", extra=(("broker", {"websockets": "off"}),)),
    Case("unbounded-queues-largest-packets",
         extra=(("broker", {"max_queued_messages": 0, "max_inflight_messages": 0, "max_packet_size": 268_435_455}),)),
    Case("influxdb-1-basic-auth", custom_rules=True, extra=(("influxdb", {"version": 1}),)),
    Case("every-interface", extra=(("bind", "0.0.0.0"),)),
    Case("no-rules", extra=(("rules", {"telemetry": None, "status": None, "archive": None}),)),
]


@dataclasses.dataclass(frozen=True)
class Rendered:
    spec: ServiceSpec
    text: str
    conf: dict[str, Any]
    files: dict[str, str]  # by the path the config names

    def named_file(self, path: str) -> str:
        return self.files[path]


@pytest.fixture(scope="session")
def render(make_stack: StackMaker) -> Callable[[Case], Rendered]:
    done: dict[str, Rendered] = {}

    def rendered(case: Case) -> Rendered:
        if case.name not in done:
            done[case.name] = _render(case)
        return done[case.name]

    def _render(case: Case) -> Rendered:
        extra: dict[str, Any] = dict(case.extra)
        if case.anonymous:
            extra["auth"] = {"anonymous": True}
        if case.custom_rules:
            extra["rules"] = {**CUSTOM_RULES, **extra.get("rules", {})}
        stack = make_stack(profile=case.profile, **extra)
        # local: as where an emqx binary is installed (otherwise the local runtime runs Mosquitto)
        ctx = dataclasses.replace(stack.plan_context(case.target), config=stack.config)  # type: ignore[arg-type]
        spec = next(s for s in build_plan(ctx) if s.name == "broker")
        by_relpath = {f.relpath: f for f in spec.files}
        text = by_relpath["emqx.conf"].content.decode()
        paths = ctx.paths
        named = {}
        for f in spec.files:
            named[f.container_path or f.relpath] = f.content.decode()
            named[paths.file("broker", f.relpath)] = f.content.decode()
        return Rendered(spec, text, read_hocon(text), named)

    return rendered


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rendered_emqx_conf_fits_emqx_schema(case: Case, render: Callable[[Case], Rendered],
                                             emqx_schema: EmqxSchema) -> None:
    rendered = render(case)
    assert emqx_schema.check(rendered.conf) == [], report(emqx_schema.check(rendered.conf))
    # the keys EMQX refuses to boot without, and the listener behind the REST API
    assert rendered.conf["node"]["cookie"]
    assert rendered.conf["node"]["data_dir"]
    assert rendered.conf["dashboard"]["listeners"]["http"]["bind"]


def _api_bodies(rendered: Rendered) -> list[tuple[str, str, dict[str, Any]]]:
    """(where, component, value) for each block EMQX's REST API documents: what the same
    object looks like through the API (type/name from the path, acl rules inline)."""
    conf = rendered.conf
    out: list[tuple[str, str, dict[str, Any]]] = []
    for name, block in conf.get("connectors", {}).get("http", {}).items():
        out.append((f"connectors.http.{name}", "bridge_http.post_connector", {**block, "type": "http", "name": name}))
    for name, block in conf.get("actions", {}).get("http", {}).items():
        out.append((f"actions.http.{name}", "bridge_http.post_bridge_v2", {**block, "type": "http", "name": name}))
    for i, authn in enumerate(conf["authentication"]):
        out.append((f"authentication[{i}]", "authn.builtin_db", authn))
    for i, source in enumerate(conf["authorization"]["sources"]):
        # The API takes a file source's rules inline; the config names the file holding them.
        api_source = {k: v for k, v in source.items() if k != "path"}
        api_source["rules"] = rendered.named_file(source["path"])
        out.append((f"authorization.sources[{i}]", "authz.api_file", api_source))
    out.append(("authorization.cache", "emqx.authz_cache", conf["authorization"]["cache"]))
    for kind, listeners in conf["listeners"].items():
        for name, block in listeners.items():
            out.append((f"listeners.{kind}.{name}", f"listeners.{kind}_required_bind",
                        {**block, "type": kind, "id": f"{kind}:{name}"}))
    for rule_id, rule in conf.get("rule_engine", {}).get("rules", {}).items():
        out.append((f"rule_engine.rules.{rule_id}", "rule_engine.rule_creation", rule))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rendered_blocks_fit_emqx_rest_api_schemas(case: Case, render: Callable[[Case], Rendered],
                                                   emqx_api: OpenApi) -> None:
    # Read as EMQX checks them (conftest EMQX_API_READING): unknown keys are refused.
    rendered = render(case)
    problems: list[Problem] = []
    for where, component, value in _api_bodies(rendered):
        problems += emqx_api.validate(value, component, where)
    settings = emqx_api.doc["paths"]["/authorization/settings"]["put"]["requestBody"]["content"]
    problems += emqx_api.validate({k: v for k, v in rendered.conf["authorization"].items() if k != "sources"},
                                  settings["application/json"]["schema"], "authorization")
    assert problems == [], report(problems)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rendered_rules_call_only_functions_emqx_has(case: Case, render: Callable[[Case], Rendered]) -> None:
    rules = render(case).conf.get("rule_engine", {}).get("rules", {})
    for rule_id, rule in rules.items():
        assert unknown_calls(rule["sql"]) == [], rule_id
        assert function_calls(rule["sql"]), f"{rule_id}: the parser found no call at all"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_http_actions_are_influxdb_v1_writes_by_its_contract(case: Case, render: Callable[[Case], Rendered],
                                                            influx_v1_api: OpenApi) -> None:
    conf = render(case).conf
    connectors = conf.get("connectors", {}).get("http", {})
    problems: list[Problem] = []
    for name, action in conf.get("actions", {}).get("http", {}).items():
        connector = connectors[action["connector"]]
        params = action["parameters"]
        url = urlsplit(connector["url"].rstrip("/") + params["path"])
        headers = {**connector.get("headers", {}), **params.get("headers", {})}
        problems += influx_v1_api.check_request(
            params["method"], url.path, query=dict(parse_qsl(url.query)), headers=headers,
            media_type=headers.get("content-type"), body=params["body"])
        assert headers["Authorization"].startswith(("Token ", "Basic ")), name
    assert problems == [], report(problems)


# -- the walker can fail ------------------------------------------------------------------------


def problems_of(schema: EmqxSchema, text: str) -> str:
    return report(schema.check(read_hocon(text)))


@pytest.mark.parametrize(("text", "expected"), [
    ("listeners.tcp.default { bind = \"0.0.0.0:1883\", max_conection = 10 }",
     r"listeners.tcp.default.max_conection: unknown key.*did you mean 'max_connections'"),
    ("authorization { no_match = maybe }", r"authorization.no_match: 'maybe' is not one of allow, deny"),
    ("mqtt { max_inflight = 0 }", r"mqtt.max_inflight: 0 is outside Integer\(1..65535\)"),
    ("mqtt { max_inflight = \"8\" }", r"expected an integer"),
    ("mqtt { max_packet_size = 1XB }", r"not a byte size"),
    ("authorization.cache.ttl = 10 minutes", r"'10 minutes' is not a duration"),
    ("authorization.cache.enable = yes", r"expected true or false"),
    ("log.console.level = loud", r"'loud' is not one of"),
    ("mqtt { server_keepalive = sometimes }", r"is not a OneOf\(Integer\(1..\+inf\),String\(\"disabled\"\)\)"),
    ("dashbaord { listeners.http.bind = 18083 }", r"dashbaord: unknown key.*did you mean 'dashboard'"),
    ("node.cookie = 123", r"node.cookie: expected a string"),
    ("mqtt.enable = true", r"mqtt.enable: unknown key"),  # hidden `enable` exists only where listed
    ("authentication = [{mechanism = password_based, backend = built_in_db}]",
     r"authentication\[0\]: matches no member of the union"),
    ("authentication = [{mechanism = password_based, backend = built_in_database, "
     "password_hash_algorithm { name = sha256, salt_position = middle }}]",
     r"salt_position: 'middle' is not one of disable, prefix, suffix"),
    ("connectors.http { \"bad name\" { url = \"http://x\" } }", r"is not a valid name for \$name"),
    ("actions.http.a { connector = c, parameters { method = patch } }",
     r"actions.http.a.parameters.method: 'patch' is not one of post, put, get, delete"),
    ("rule_engine.rules.r1 { enable = true }", r"rule_engine.rules.r1.sql: required field is missing"),
    ("rule_engine.rules.r1 { sql = \"SELECT 1\", descripton = x }", r"descripton: unknown key"),
    ("rule_engine.rules.r1 { sql = \"SELECT 1\", actions = [{function = republish, args { topic = t, qos = 3 }}] }",
     r"args.qos: 3 is not a OneOf"),
    ("rule_engine.rules.r1 { sql = \"SELECT 1\", actions = [{function = republish, args { qos = 1 }}] }",
     r"args.topic: required field is missing"),
    ("rule_engine.rules.r1 { sql = \"SELECT 1\", actions = [42] }", r"42 is no member of"),
    ("rule_engine { ignore_sys_messages = true }", r"ignore_sys_messages: unknown key"),
])
def test_schema_walk_refuses_what_emqx_refuses(emqx_schema: EmqxSchema, text: str, expected: str) -> None:
    import re

    found = problems_of(emqx_schema, text)
    assert re.search(expected, found), found


@pytest.mark.parametrize("text", [
    # ip_port: the dump prints String, EMQX takes a bare port (ecokit.schemacheck.emqx_schema.NUMBERS_AS_STRINGS)
    "listeners.tcp.default.bind = 1883",
    "dashboard.listeners.http.bind = 18083",
    # hidden fields, read from the sources (HIDDEN_KEYS) and the rule engine's Erlang schema
    "listeners.ssl.default.enable = false",
    "dashboard.default_username = admin",
    "rule_engine { ignore_sys_message = true, rules.r1 { sql = \"SELECT * FROM \\\"t/#\\\"\", "
    "actions = [\"http:a\", {function = console}, {function = \"mymod:myfun\", args {}}] } }",
    "actions.webhook.a { connector = c }",  # an alias of actions.http
    "listeners.tcp.default = marked_for_deletion",
])
def test_schema_walk_accepts_what_emqx_accepts(emqx_schema: EmqxSchema, text: str) -> None:
    assert problems_of(emqx_schema, text) == ""


def test_a_mutated_rendered_conf_is_refused(render: Callable[[Case], Rendered], emqx_schema: EmqxSchema) -> None:
    text = render(next(c for c in CASES if c.name == "mtls-password-default-rules-docker")).text
    mutations = [("verify = verify_peer", "verify = verify_pear"), ("query_mode = async", "query_mode = later"),
                 ("bootstrap_type = plain", "bootstrap_type = csv"),
                 ("enable_pipelining = 100", "enable_pipelining = 0"), ("ignore_sys_message = true", "ignore_sys = 1")]
    for good, bad in mutations:
        assert good in text, good
        text = text.replace(good, bad, 1)
    found = problems_of(emqx_schema, text)
    for expected in ("verify_pear", "query_mode", "bootstrap_type", "enable_pipelining", "ignore_sys: unknown key"):
        assert expected in found, (expected, found)
