"""InfluxDB 2.7 in docker, checked against its image's entrypoint and its OpenAPI contracts:
the setup the entrypoint runs for ecokit's environment, and the v1 requests that reach the
bucket through its automatic DBRP mapping (docs/schemas.md, "How v1 writes reach the bucket")."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from schema_support import StackMaker

from ecokit.errors import StoreError
from ecokit.runtime.docker.service import container_files
from ecokit.schemacheck import report
from ecokit.schemacheck.influx import (
    EntrypointFacts,
    captured_requests,
    check_entrypoint_env,
    check_flux_task,
    onboarding_request,
    retention_seconds,
)
from ecokit.schemacheck.openapi import OpenApi
from ecokit.services.observability import grafana
from ecokit.stack import Stack
from ecokit.store.influx import (
    InfluxEndpoint,
    InfluxV1,
    check_v1_mapping,
    dbrp_problem,
    dbrp_request,
)

# Stricter than the server: the contract puts every operation under its global
# TokenAuthentication, but POST /api/v2/setup is served without a token until the
# instance is set up (`influx setup` sends none: there is no token yet).
SETUP_WITHOUT_TOKEN = "onboarding runs before any token exists"
# Where the v1 contract is stricter than InfluxDB's /query handler (influxdb
# http/legacy/influxqld_handler.go, handleInfluxqldQuery), which reads every parameter with
# r.FormValue (query string or urlencoded form alike):
QUERY_EXCEPTIONS = {
    "query epoch": "not listed; the handler reads r.FormValue(\"epoch\") for epoch timestamps",
    "query params": "not listed; the handler reads r.FormValue(\"params\") for bound parameters",
    "header Content-Type": "the contract allows only application/vnd.influxql; the handler reads the "
                           "statement from a urlencoded form (r.FormValue(\"q\")), as 1.x and Grafana send it",
    "header Accept-Encoding": "an RFC 9110 list (requests sends \"gzip, deflate\"); the contract's enum is "
                              "one coding",
}


def influx_setup(stack: Stack) -> tuple[dict[str, str], dict[str, bytes]]:
    spec = next(s for s in stack.plan("docker") if s.name == "influxdb")
    assert spec.container is not None
    files = {f.path: f.content for f in container_files(spec, stack.cert_paths, certs_required=False)}
    return dict(spec.container.env), files


@pytest.mark.parametrize("retention", ["0", "30d", "1w", "12h"])
def test_the_entrypoint_sets_up_from_ecokits_environment(make_stack: StackMaker, influx_facts: EntrypointFacts,
                                                         influx_api: OpenApi, retention: str) -> None:
    env, files = influx_setup(make_stack(influxdb={"retention": retention}))
    assert check_entrypoint_env(env, files, influx_facts) == [], report(check_entrypoint_env(env, files, influx_facts))
    body = onboarding_request(env, files)
    assert body["retentionPeriodSeconds"] == {"0": 0, "30d": 2_592_000, "1w": 604_800, "12h": 43_200}[retention]
    assert body["token"]
    assert body["password"]
    assert body["bucket"] == "fleet"
    problems = influx_api.check_request("POST", "/api/v2/setup", media_type="application/json", body=body,
                                        unauthenticated=SETUP_WITHOUT_TOKEN)
    assert problems == [], report(problems)


def test_secrets_reach_the_entrypoint_as_files_it_reads(make_stack: StackMaker, influx_facts: EntrypointFacts) -> None:
    env, files = influx_setup(make_stack())
    for name in ("DOCKER_INFLUXDB_INIT_PASSWORD", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"):
        assert name not in env, f"{name} would show in `docker inspect`"
        assert f"{name}_FILE" in influx_facts.file_variants
        assert files[env[f"{name}_FILE"]]


@pytest.mark.parametrize(("change", "expected"), [
    ({"DOCKER_INFLUXDB_INIT_BUKET": "fleet"}, "DOCKER_INFLUXDB_INIT_BUKET: the entrypoint does not read this"),
    ({"DOCKER_INFLUXDB_INIT_MODE": "init"}, "'init' is not one of setup, upgrade"),
    ({"DOCKER_INFLUXDB_INIT_ORG": ""}, "DOCKER_INFLUXDB_INIT_ORG: required for setup"),
    ({"DOCKER_INFLUXDB_INIT_PASSWORD_FILE": "/nowhere"}, "/nowhere is not placed in the container"),
    ({"DOCKER_INFLUXDB_INIT_RETENTION": "1y"}, "'1y' is not an influx CLI duration"),
    ({"DOCKER_INFLUXDB_INIT_RETENTION": "30m"}, "'30m' is under 1h: InfluxDB refuses the bucket"),
    ({"DOCKER_INFLUXDB_INIT_ORG_ID": "x"}, "the entrypoint sets this itself"),
    ({"INFLUXD_REPORTING_DISABLD": "true"}, "not an influxd option"),
])
def test_entrypoint_check_refuses_a_broken_setup(make_stack: StackMaker, influx_facts: EntrypointFacts,
                                                 change: dict[str, str], expected: str) -> None:
    env, files = influx_setup(make_stack())
    found = report(check_entrypoint_env({**env, **change}, files, influx_facts))
    assert expected in found, found


def test_the_setup_contract_refuses_a_request_without_org(influx_api: OpenApi) -> None:
    problems = influx_api.check_request("POST", "/api/v2/setup", media_type="application/json",
                                        body={"username": "admin", "bucket": "fleet", "retentionPeriodSeconds": "1d"},
                                        unauthenticated=SETUP_WITHOUT_TOKEN)
    assert {p.message for p in problems} == {"'org' is a required property", "'1d' is not of type 'integer'"}


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0), ("1w2d", 777_600), ("90m", 5400), ("1d", 86400),
                                               ("30", None), ("", None), ("1mo", None)])
def test_retention_is_read_as_the_influx_cli_reads_it(text: str, seconds: int | None) -> None:
    assert retention_seconds(text) == seconds


def test_the_image_is_the_one_the_entrypoint_comes_from(make_stack: StackMaker, influx_facts: EntrypointFacts) -> None:
    spec = next(s for s in make_stack().plan("docker") if s.name == "influxdb")
    assert spec.container is not None
    assert spec.container.image == f"influxdb:{influx_facts.image_env['INFLUXDB_VERSION']}"


# -- v1 requests, by the contract (swaggerV1Compat.yml) ------------------------------------------


def v2_client(token: str = "tok-en") -> InfluxV1:
    return InfluxV1(InfluxEndpoint("http://influxdb:8086", "fleet", token=token, version=2))


def test_v1_writes_with_a_token_fit_the_contract(influx_v1_api: OpenApi) -> None:
    with v2_client() as client, captured_requests(client.session) as sent:
        client.write(["telemetry,vehicle=v1 speed=1 1"], precision="ms")
    (request,) = sent
    assert request.headers["Authorization"] == "Token tok-en"  # the word Token, case-sensitive (contract)
    problems = influx_v1_api.check_request(request.method, request.path, query=request.query,
                                           headers=request.headers, media_type=request.media_type,
                                           body=(request.body or b"").decode())
    assert problems == [], report(problems)
    assert request.query == {"db": "fleet", "precision": "ms"}  # no rp: the bucket's default mapping


def test_v1_queries_fit_the_contract_but_for_their_form_body(influx_v1_api: OpenApi) -> None:
    with v2_client() as client, captured_requests(client.session) as sent:
        client.query("SHOW MEASUREMENTS LIMIT 1")
        client.query("SELECT * FROM telemetry WHERE vehicle = $v", params={"v": "v1"})
    for request in sent:
        # Stricter than the server: the contract lists only text/plain bodies; InfluxDB reads
        # the statement from a urlencoded form as every v1 client sends it (r.FormValue("q")).
        assert request.media_type == "application/x-www-form-urlencoded"
        assert "q" in request.form()
        problems = influx_v1_api.check_request(request.method, request.path, query=request.query,
                                               headers=request.headers, exceptions=QUERY_EXCEPTIONS)
        assert problems == [], report(problems)
        assert request.query["db"] == "fleet"


def test_v1_contract_refuses_requests_it_does_not_describe(influx_v1_api: OpenApi) -> None:
    problems = influx_v1_api.check_request("POST", "/write", query={"precision": "ms"}, headers={},
                                           media_type="text/plain", body="m v=1")
    assert {str(p) for p in problems} == {"POST /write query db: required parameter is missing",
                                          "POST /write: no security requirement is met "
                                          "(one of: TokenAuthentication | BasicAuthentication | "
                                          "QuerystringAuthentication)"}
    problems = influx_v1_api.check_request("POST", "/write", query={"db": "fleet", "chunked": "true"},
                                           headers={"Authorization": "Token t", "Content-Encoding": "br"},
                                           media_type="application/json", body={})
    assert {p.where for p in problems} == {"POST /write query chunked", "POST /write header Content-Encoding",
                                           "POST /write"}
    with pytest.raises(KeyError):
        influx_v1_api.operation("POST", "/api/v2/write")


def test_grafanas_influxql_datasource_authenticates_as_the_contract_says(make_stack: StackMaker) -> None:
    stack = make_stack()
    spec = grafana(stack.plan_context("docker"), with_prometheus=False)
    import yaml

    doc = yaml.safe_load(next(f for f in spec.files if f.relpath.endswith("datasources/ecokit.yaml")).content)
    (influx,) = doc["datasources"]
    assert influx["jsonData"]["dbName"] == stack.config.influxdb.database  # the bucket, by its virtual mapping
    header = influx["jsonData"]["httpHeaderName1"]
    assert header == "Authorization"
    assert influx["secureJsonData"]["httpHeaderValue1"].startswith("Token ")


# -- the DBRP mapping v1 requests rely on ------------------------------------------------------------

BUCKET_ID = "4d4d9d5b61dee751"
VIRTUAL = {"id": BUCKET_ID, "orgID": "bea7ea952287f70d", "bucketID": BUCKET_ID, "database": "fleet",
           "retention_policy": "autogen", "default": True, "virtual": True}
EXPLICIT = {"id": "0a3cbb5dd526a000", "orgID": "bea7ea952287f70d", "bucketID": "0000000000000001",
            "database": "fleet", "retention_policy": "autogen", "default": True, "virtual": False}


def test_the_dbrp_lookup_fits_the_contract(influx_api: OpenApi) -> None:
    path, params = dbrp_request("ecokit", "fleet")
    assert influx_api.check_request("GET", path, query=params, headers={"Authorization": "Token t"}) == []
    op, _ = influx_api.operation("GET", path)
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    for listing in ({"content": [VIRTUAL]}, {"content": [EXPLICIT, {**VIRTUAL, "default": False}]}, {"content": []}):
        assert influx_api.validate(listing, schema) == []
    assert influx_api.validate({"content": [{"database": "fleet"}]}, schema)


@pytest.mark.parametrize(("listed", "problem"), [
    ([VIRTUAL], None),
    ([{**EXPLICIT, "bucketID": BUCKET_ID}, {**VIRTUAL, "default": False}], None),
    ([EXPLICIT, VIRTUAL], "mapped to bucket id 0000000000000001 by an explicit DBRP mapping"),
    ([], "no DBRP mapping serves database 'fleet'"),
    ([{**VIRTUAL, "database": "other"}], "no DBRP mapping serves database 'fleet'"),
])
def test_v1_writes_reach_the_bucket_unless_an_explicit_mapping_overrides_it(
        listed: list[dict[str, Any]], problem: str | None) -> None:
    found = dbrp_problem(listed, "fleet")
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_setup_stops_on_a_mapping_to_another_bucket() -> None:
    listing = json.dumps({"content": [EXPLICIT, VIRTUAL]}).encode()
    with (v2_client() as client, captured_requests(client.session, {"/api/v2/dbrps": (200, listing)}) as sent,
          pytest.raises(StoreError, match="explicit DBRP mapping")):
        check_v1_mapping(client, org="ecokit", database="fleet")
    assert (sent[0].method, sent[0].path, sent[0].query) == ("GET", "/api/v2/dbrps", {"org": "ecokit", "db": "fleet"})
    with v2_client() as client, captured_requests(
            client.session, {"/api/v2/dbrps": (200, json.dumps({"content": [VIRTUAL]}).encode())}):
        check_v1_mapping(client, org="ecokit", database="fleet")


def test_influxdb_1_credentials_on_v1_requests_are_basic_auth(influx_v1_api: OpenApi) -> None:
    client = InfluxV1(InfluxEndpoint("http://influxdb:8086", "fleet", username="ecokit-writer", password="pw"))
    with client, captured_requests(client.session) as sent:
        client.write("m v=1")
    assert sent[0].headers["Authorization"] == "Basic " + base64.b64encode(b"ecokit-writer:pw").decode()
    assert influx_v1_api.check_request("POST", "/write", query=sent[0].query, headers=sent[0].headers,
                                       media_type="text/plain", body="m v=1") == []


# -- Flux tasks (for a rendered 2.x task, e.g. a geofence downsampling) -------------------------------

TASK = '''option task = {name: "ecokit-geofence-5m", every: 5m, offset: 30s}

from(bucket: "fleet")
  |> range(start: -task.every)
  |> filter(fn: (r) => r._measurement == "events")
  |> aggregateWindow(every: 5m, fn: count)
  |> to(bucket: "fleet_5m")
'''


def test_a_flux_task_and_its_creation_request_fit_the_contract(influx_api: OpenApi) -> None:
    assert check_flux_task(TASK) == []
    body = {"org": "ecokit", "status": "active", "flux": TASK, "description": "geofence events per 5 minutes"}
    assert influx_api.check_request("POST", "/api/v2/tasks", headers={"Authorization": "Token t"},
                                    media_type="application/json", body=body) == []
    problems = influx_api.check_request("POST", "/api/v2/tasks", headers={"Authorization": "Token t"},
                                        media_type="application/json", body={"org": "ecokit", "status": "paused"})
    assert {p.message for p in problems} == {"'flux' is a required property",
                                             "'paused' is not one of ['active', 'inactive']"}


@pytest.mark.parametrize(("flux", "expected"), [
    (TASK.replace('name: "ecokit-geofence-5m", ', ""), "task.name: a task needs a name"),
    (TASK.replace("every: 5m", 'cron: "*/5 * * * *", every: 5m'), "exactly one of every and cron"),
    (TASK.replace("every: 5m,", "every: 5 minutes,"), "'5 minutes' is not a Flux duration"),
    (TASK.replace("offset: 30s", "ofset: 30s"), "task.ofset: not a task option"),
    (TASK.replace("every: 5m", 'cron: "every five"'), "is not a cron expression"),
    (TASK.replace("option task", "option tsk"), "needs exactly one `option task"),
])
def test_flux_task_check_refuses_tasks_influxdb_refuses(flux: str, expected: str) -> None:
    found = report(check_flux_task(flux))
    assert expected in found, found
