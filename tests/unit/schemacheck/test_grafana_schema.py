"""Grafana: every committed dashboard against the dashboard JSON Schema and each panel's
plugin schema (geomap, timeseries, stat, table) and query model; provisioning files
against the keys Grafana's provisioning reads."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from schema_support import StackMaker

from ecokit.resources import dashboards_dir
from ecokit.schemacheck import report
from ecokit.schemacheck.grafana import (
    PANEL_SCHEMAS,
    GrafanaSchemas,
    check_datasources_file,
    check_providers_file,
    panels,
)
from ecokit.services.observability import grafana

DASHBOARDS = sorted(dashboards_dir().glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_committed_dashboard_fits_grafanas_schemas(grafana_schemas: GrafanaSchemas, path: Path) -> None:
    dashboard = load(path)
    problems = grafana_schemas.check_dashboard(dashboard, path.name)
    assert problems == [], report(problems)
    kinds = {panel["type"] for _, panel in panels(dashboard)}
    assert kinds <= set(PANEL_SCHEMAS), kinds


def test_every_panel_type_with_a_schema_is_used() -> None:
    # A schema no dashboard exercises would prove nothing.
    used = {panel["type"] for path in DASHBOARDS for _, panel in panels(load(path))}
    assert used == set(PANEL_SCHEMAS)


def fleet() -> dict[str, Any]:
    return load(dashboards_dir() / "fleet-overview.json")


def first(dashboard: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for _, p in panels(dashboard) if p["type"] == kind)


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: first(d, "geomap")["options"]["layers"][0]["location"].update(mode="gps"),
     "options.layers[0].location.mode: 'gps' is not one of"),
    (lambda d: first(d, "geomap")["options"].update(zoomToFit=True), "('zoomToFit' was unexpected)"),
    (lambda d: first(d, "stat")["options"].update(colorMode="rainbow"), "options.colorMode: 'rainbow' is not one of"),
    (lambda d: first(d, "stat")["options"]["reduceOptions"].update(calcs="last"), "reduceOptions.calcs: 'last' is not"),
    (lambda d: first(d, "timeseries")["options"]["legend"].update(placement="top"), "legend.placement: 'top'"),
    (lambda d: first(d, "timeseries")["fieldConfig"]["defaults"]["custom"].update(lineWidht=2),
     "custom: Additional properties are not allowed ('lineWidht' was unexpected)"),
    (lambda d: first(d, "table")["options"].update(cellHeight="huge"), "options.cellHeight: 'huge' is not one of"),
    (lambda d: first(d, "stat")["fieldConfig"]["defaults"].update(custom={"lineWidth": 1}),
     "a stat panel has no custom field options"),
    (lambda d: first(d, "table")["targets"][0].update(rawSql="SELECT 1"), "('rawSql' was unexpected)"),
    (lambda d: first(d, "table")["targets"][0].update(resultFormat="csv"), "resultFormat: 'csv' is not one of"),
    (lambda d: first(d, "stat").update(type="piechart"), "no schema for panel type 'piechart'"),
    (lambda d: d.update(refresh=10), "refresh: 10 is not of type 'string'"),
    (lambda d: d["panels"][0]["gridPos"].update(w="half"), "gridPos.w: 'half' is not of type 'integer'"),
])
def test_dashboard_check_refuses_options_grafana_would_ignore_or_refuse(
        grafana_schemas: GrafanaSchemas, edit: Any, expected: str) -> None:
    dashboard = fleet()
    edit(dashboard)
    found = report(grafana_schemas.check_dashboard(dashboard, "fleet"))
    assert expected in found, found


def test_prometheus_queries_are_checked_against_their_own_schema(grafana_schemas: GrafanaSchemas) -> None:
    dashboard = load(dashboards_dir() / "broker.json")
    panel = first(dashboard, "timeseries")
    panel["targets"][0]["exemplars"] = True
    found = report(grafana_schemas.check_dashboard(dashboard, "broker"))
    assert "('exemplars' was unexpected)" in found, found


def test_schema_requires_what_grafana_fills_in(grafana_schemas: GrafanaSchemas) -> None:
    # Stricter than Grafana: it fills in templating, annotations and schemaVersion when a
    # dashboard lacks them; the schema requires them, and ecokit's generator writes them.
    dashboard = copy.deepcopy(fleet())
    for key in ("templating", "annotations", "schemaVersion"):
        dashboard.pop(key)
    found = report(grafana_schemas.check_dashboard(dashboard, "fleet"))
    for key in ("templating", "annotations", "schemaVersion"):
        assert f"'{key}' is a required property" in found
    for path in DASHBOARDS:
        assert {"templating", "annotations", "schemaVersion"} <= set(load(path))


# -- provisioning -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("influx", "with_prometheus"), [(1, True), (2, True), (2, False)])
def test_rendered_provisioning_files_use_keys_grafana_reads(make_stack: StackMaker, influx: int,
                                                            with_prometheus: bool) -> None:
    stack = make_stack(emqx=False, influxdb={"version": influx})
    spec = grafana(stack.plan_context("docker"), with_prometheus)
    files = {f.relpath: yaml.safe_load(f.content) for f in spec.files if f.relpath.endswith(".yaml")}
    datasources = files["provisioning/datasources/ecokit.yaml"]
    assert check_datasources_file(datasources) == [], report(check_datasources_file(datasources))
    providers = files["provisioning/dashboards/ecokit.yaml"]
    assert check_providers_file(providers) == [], report(check_providers_file(providers))
    assert len(datasources["datasources"]) == (2 if with_prometheus else 1)


@pytest.mark.parametrize(("doc", "expected"), [
    ({"apiVersion": 1, "datasource": []}, "datasources.datasource: Grafana reads no datasources-file key"),
    ({"apiVersion": 0, "datasources": []}, "must be 1"),
    ({"apiVersion": 1, "datasources": [{"name": "x", "type": "influxdb", "jsonData": {"dbname": "f"}}]},
     "jsonData.dbname: the influxdb datasource reads no such option"),
    ({"apiVersion": 1, "datasources": [{"name": "x", "type": "influxdb", "is_default": True}]},
     "datasources[0].is_default: Grafana reads no datasource key"),
    ({"apiVersion": 1, "datasources": [{"name": "x", "type": "influxdb",
                                        "secureJsonData": {"httpHeaderValue1": "Token t"}}]},
     "a header value without its httpHeaderName"),
    ({"apiVersion": 1, "datasources": [{"type": "influxdb"}]}, "datasources[0].name: required"),
    ({"apiVersion": 1, "deleteDatasources": [{"name": "x", "org_id": 1}]}, "org_id: Grafana reads no key"),
])
def test_datasources_check_refuses_keys_grafana_ignores(doc: dict[str, Any], expected: str) -> None:
    found = report(check_datasources_file(doc))
    assert expected in found, found


@pytest.mark.parametrize(("doc", "expected"), [
    ({"apiVersion": 1, "providers": [{"name": "e", "type": "file", "options": {"paths": "/x"}}]},
     "options.paths: Grafana reads no file-provider option"),
    ({"apiVersion": 1, "providers": [{"name": "e", "options": {"path": "/x", "foldersFromFilesStructure": True},
                                      "folder": "ecokit"}]}, "must be empty with foldersFromFilesStructure"),
    ({"apiVersion": 1, "providers": [{"name": "e", "disable_deletion": True, "options": {"path": "/x"}}]},
     "disable_deletion: Grafana reads no provider key"),
])
def test_providers_check_refuses_keys_grafana_ignores(doc: dict[str, Any], expected: str) -> None:
    found = report(check_providers_file(doc))
    assert expected in found, found
