"""`ecokit compose` and the dashboards built in code."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from pathlib import Path

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
    doc = compose_document(stack, plan)
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
    assert doc["services"]["grafana"]["depends_on"] == ["influxdb"]


def test_compose_file_parses_back_and_is_written_0600(make_project: Callable[..., Path]) -> None:
    config = make_project(extra=FULL)
    assert main(["compose", "-c", str(config)]) == 0
    path = config.parent / "docker-compose.yml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    stack = Stack.load(config, env={})
    assert doc == compose_document(stack, stack.plan("docker"))
    assert render_compose(stack, stack.plan("docker")).startswith("# docker-compose.yml for ecokit stack")


def test_committed_dashboards_are_what_the_code_builds() -> None:
    assert dashboards.stale(dashboards_dir()) == [], "run `python -m ecokit.dashboards` and commit dashboards/"


def test_dashboards_cover_fleet_vehicles_pipeline_and_broker() -> None:
    loaded = {p.name: json.loads(p.read_text()) for p in dashboards_dir().glob("*.json")}
    assert set(loaded) == {"fleet-overview.json", "vehicle-telemetry.json", "pipeline-health.json", "broker.json"}
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
    for metric in ("emqx_connections_count", "emqx_messages_received", "emqx_messages_dropped"):
        assert metric in text["broker.json"], metric
    vehicle = loaded["vehicle-telemetry.json"]
    assert [v["name"] for v in vehicle["templating"]["list"]] == ["vehicle"]
    assert all("$vehicle" in t["query"] for p in vehicle["panels"] for t in p["targets"])


def test_dashboard_queries_are_influxql_with_macros_only_grafana_fills() -> None:
    queries = dashboards.influxql_queries(dashboards_dir())
    assert len(queries) >= 10
    assert all(q.startswith(("SELECT", "SHOW")) for q in queries)
    assert not [q for q in queries if re.search(r"\$(?!tag_)[A-Za-z_{]", q)]
