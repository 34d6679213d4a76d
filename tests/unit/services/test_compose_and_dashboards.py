"""`ecokit compose` and the dashboards built in code."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ecokit import dashboards
from ecokit.cli import main
from ecokit.resources import dashboards_dir
from ecokit.runtime.docker.compose import compose_document, render_compose
from ecokit.runtime.docker.service import StackNames, container_config
from ecokit.stack import Stack

FULL = {"broker": {"kind": "emqx"}, "grafana": {"enabled": True}, "prometheus": {"enabled": True}}


def test_compose_describes_the_same_containers_as_the_runtime(make_project: Callable[..., Path]) -> None:
    stack = Stack.load(make_project(extra=FULL), env={})
    plan = stack.plan("docker")
    doc = compose_document(stack.docker_settings(), plan)
    names = StackNames(stack.config.stack)
    assert list(doc["services"]) == [s.name for s in plan]
    assert doc["networks"]["ecokit"]["name"] == names.network
    for spec in plan:
        entry = doc["services"][spec.name]
        runtime = container_config(spec, names, bind=stack.config.bind)
        assert entry["container_name"] == runtime.name
        assert entry["labels"] == dict(runtime.labels)
        assert entry["image"] == runtime.image
        assert sorted(entry["networks"]["ecokit"]["aliases"]) == sorted(runtime.aliases)
        assert entry.get("ports", []) == [f"{h}:{p}:{c}" for c, h, p in runtime.ports]
        volumes = [f"{doc['volumes'][v.split(':')[0]]['name']}:{v.split(':', 1)[1]}" for v in entry.get("volumes", [])]
        assert volumes == [f"{name}:{path}" for name, path in runtime.volumes]
    # Files go in with the owner and mode the service needs (inline content: Compose copies it).
    users = next(c for c in doc["services"]["broker"]["configs"] if c["target"].endswith("users.csv"))
    assert (users["uid"], users["gid"], users["mode"]) == ("1000", "1000", 0o600)
    # Compose interpolates `$`: EMQX's ${username} placeholders must survive it.
    acl = next(c for c in doc["services"]["broker"]["configs"] if c["target"].endswith("acl.conf"))
    assert "$${username}" in doc["configs"][acl["source"]]["content"]
    assert doc["services"]["grafana"]["depends_on"] == {"influxdb": {"condition": "service_healthy"}}


COMPOSE_SCHEMA = Path(__file__).parents[2] / "data" / "schemas" / "compose" / "compose-spec.schema.json"
SETUPS = {
    "mosquitto": {"prometheus": {"enabled": True}},
    "emqx-full": FULL,
    "tls": {"tls": {"enabled": True}, "prometheus": {"enabled": True}},
    "mtls-only": {"tls": {"enabled": True, "mtls": True, "plain_listener": False}},
}


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_compose_file_is_valid_by_the_compose_specification(make_project: Callable[..., Path], setup: str) -> None:
    # Debian ships no `docker compose` (v2) to run `config` with; its docker-compose 1.29 predates
    # inline `content` configs. The Compose Specification's own schema checks the document instead.
    from jsonschema import Draft7Validator

    stack = Stack.load(make_project(extra=SETUPS[setup]), env={})
    if stack.config.tls.enabled:
        stack.generate_certs()
    document = yaml.safe_load(render_compose(stack.docker_settings(), stack.plan("docker")))
    errors = sorted(Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text())).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


def test_compose_services_wait_for_healthy_dependencies(make_project: Callable[..., Path]) -> None:
    stack = Stack.load(make_project(extra={"prometheus": {"enabled": True}, "grafana": {"enabled": True}}), env={})
    plan = stack.plan("docker")
    doc = compose_document(stack.docker_settings(), plan)
    services = doc["services"]
    checks = {name: entry["healthcheck"]["test"] for name, entry in services.items() if "healthcheck" in entry}
    assert set(checks) == set(services), "every service of the default docker stack has a healthcheck"
    broker_check = checks["broker"]
    assert broker_check[:2] == ["CMD", "mosquitto_sub"]
    assert broker_check[broker_check.index("-u") + 1] == "ecokit-health"
    assert stack.secret_values()["service/ecokit-health"].replace("$", "$$") in broker_check
    assert checks["influxdb"] == ["CMD", "influx", "ping", "--host", "http://127.0.0.1:8086"]
    assert checks["bridge"][:3] == ["CMD", "python", "-c"]
    assert "/readyz" in checks["bridge"][3]
    assert checks["prometheus"][:2] == ["CMD", "wget"]
    for spec in plan:
        probe = spec.probe
        assert probe is not None
        assert services[spec.name]["healthcheck"]["start_period"] == f"{int(probe.timeout)}s"
        for dep in spec.depends_on:
            assert services[spec.name]["depends_on"][dep] == {"condition": "service_healthy"}, (spec.name, dep)
    assert set(services["bridge"]["depends_on"]) == {"broker", "influxdb"}
    emqx = Stack.load(make_project(extra=FULL), env={})
    emqx_doc = compose_document(emqx.docker_settings(), emqx.plan("docker"))
    assert emqx_doc["services"]["broker"]["healthcheck"]["test"] == ["CMD", "/opt/emqx/bin/emqx", "ctl", "status"]


def test_a_broker_without_a_checkable_listener_is_waited_for_to_start(make_project: Callable[..., Path]) -> None:
    stack = Stack.load(make_project(extra=SETUPS["mtls-only"]), env={})
    stack.generate_certs()
    doc = compose_document(stack.docker_settings(), stack.plan("docker"))
    assert "healthcheck" not in doc["services"]["broker"]
    assert doc["services"]["shadow"]["depends_on"]["broker"] == {"condition": "service_started"}
    header = render_compose(stack.docker_settings(), stack.plan("docker")).splitlines()[:8]
    assert any("no healthcheck for broker" in line for line in header)


def test_compose_file_parses_back_and_is_written_0600(make_project: Callable[..., Path]) -> None:
    config = make_project(extra=FULL)
    assert main(["compose", "-c", str(config)]) == 0
    path = config.parent / "docker-compose.yml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    stack = Stack.load(config, env={})
    assert doc == compose_document(stack.docker_settings(), stack.plan("docker"))
    rendered = render_compose(stack.docker_settings(), stack.plan("docker"))
    assert rendered.startswith("# docker-compose.yml for ecokit stack")


def test_committed_dashboards_are_what_the_code_builds() -> None:
    assert dashboards.stale(dashboards_dir()) == [], "run `python -m ecokit.dashboards` and commit dashboards/"


def test_dashboards_cover_fleet_vehicles_pipeline_and_broker() -> None:
    loaded = {p.name: json.loads(p.read_text()) for p in dashboards_dir().glob("*.json")}
    assert set(loaded) == {"bench.json", "fleet-overview.json", "vehicle-telemetry.json", "pipeline-health.json",
                           "broker.json", "services.json"}
    for name, dashboard in loaded.items():
        assert dashboard["uid"].startswith("ecokit-"), name
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
    text = {name: json.dumps(d) for name, d in loaded.items()}
    fleet = loaded["fleet-overview.json"]
    geomap = next(p for p in fleet["panels"] if p["type"] == "geomap")
    location = geomap["options"]["layers"][0]["location"]
    assert (location["mode"], location["latitude"], location["longitude"]) == ("coords", "lat", "lng")
    assert geomap["targets"][0]["resultFormat"] == "table"
    for metric in (dashboards.BRIDGE_RECEIVED, dashboards.BRIDGE_WRITTEN, dashboards.BRIDGE_REJECTED,
                   dashboards.BRIDGE_BUFFERED, dashboards.BRIDGE_DROPPED, dashboards.BRIDGE_LATENCY + "_bucket"):
        assert metric in text["pipeline-health.json"], metric
    for metric in ("emqx_connections_count", "emqx_messages_received", "emqx_messages_dropped",
                   "mosquitto_clients_connected", "mosquitto_publish_messages_received_total",
                   "mosquitto_publish_messages_dropped_total"):
        assert metric in text["broker.json"], metric
    for metric in (dashboards.SHADOW_REQUESTS, dashboards.SHADOW_REJECTIONS, dashboards.SHADOW_LATENCY + "_bucket",
                   dashboards.PROCESSOR_RECEIVED, dashboards.PROCESSOR_PUBLISHED):
        assert metric in text["services.json"], metric
    vehicle = loaded["vehicle-telemetry.json"]
    assert [v["name"] for v in vehicle["templating"]["list"]] == ["vehicle"]
    assert all("$vehicle" in t["query"] for p in vehicle["panels"] for t in p["targets"])


def test_dashboard_queries_are_influxql_with_macros_only_grafana_fills() -> None:
    queries = dashboards.influxql_queries(dashboards_dir())
    assert len(queries) >= 10
    assert all(q.startswith(("SELECT", "SHOW")) for q in queries)
    assert not [q for q in queries if re.search(r"\$(?!tag_)[A-Za-z_{]", q)]
