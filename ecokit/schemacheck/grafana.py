"""Grafana dashboards and provisioning files against what Grafana reads.

- Dashboards: the classic dashboard JSON Schema (grafana-foundation-sdk, generated from
  Grafana's CUE kinds), then per panel its ``options`` and
  ``fieldConfig.defaults.custom`` against the panel plugin's schema (geomap, timeseries,
  stat, table), and each query against its datasource's query model (Prometheus: the
  SDK's schema; InfluxDB: the ``InfluxQuery`` fields of Grafana's plugin, listed below as
  Grafana's source is AGPL and not copied).
- Provisioning: the keys of datasource and dashboard-provider files against the fields
  Grafana's provisioning structs read (``pkg/services/provisioning``), and each
  datasource's ``jsonData``/``secureJsonData`` against its plugin's options.

Grafana ignores what it does not know; the schemas refuse it, which is the point: an
option that silently does nothing is a bug in a generated dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from ecokit.schemacheck import Problem
from ecokit.schemacheck.openapi import deepest

PANEL_SCHEMAS = ("geomap", "timeseries", "stat", "table")

# Grafana pkg/services/provisioning/datasources/types.go (configsV1, upsertDataSourceFromConfigV1,
# deleteDatasourceConfigV1) and dashboards/types.go (configV1, provider). Field names only.
DATASOURCE_FILE_KEYS = {"apiVersion": "configVersion", "datasources": "configsV1",
                        "deleteDatasources": "configsV1",
                        "prune": "provisioning docs, Grafana 11.1+ (newer than the types.go version read)"}
DATASOURCE_KEYS = ("orgId", "orgName", "version", "name", "type", "access", "url", "user", "database", "basicAuth",
                   "basicAuthUser", "withCredentials", "isDefault", "correlations", "jsonData", "secureJsonData",
                   "editable", "uid")
DELETE_DATASOURCE_KEYS = ("orgId", "orgName", "name")
PROVIDER_FILE_KEYS = ("apiVersion", "providers")
PROVIDER_KEYS = ("name", "type", "orgId", "folder", "folderUid", "editable", "options", "disableDeletion",
                 "updateIntervalSeconds", "allowUiUpdates")
FILE_PROVIDER_OPTIONS = ("path", "foldersFromFilesStructure")

# jsonData every HTTP datasource reads (@grafana/data DataSourceJsonData, the SDK's common
# schema, and the HTTP settings: custom headers httpHeaderName<N>/httpHeaderValue<N>).
HTTP_JSON_DATA = ("authType", "defaultRegion", "profile", "manageAlerts", "alertmanagerUid", "timeout",
                  "keepCookies", "tlsAuth", "tlsAuthWithCACert", "tlsSkipVerify", "serverName", "oauthPassThru")
HTTP_SECURE_JSON_DATA = ("basicAuthPassword", "tlsCACert", "tlsClientCert", "tlsClientKey")
HEADER_NAME = re.compile(r"^httpHeaderName[1-9][0-9]*$")
HEADER_VALUE = re.compile(r"^httpHeaderValue[1-9][0-9]*$")
# public/app/plugins/datasource/influxdb/types.ts: InfluxOptions, InfluxSecureJsonData.
PLUGIN_JSON_DATA = {
    "influxdb": ("version", "timeInterval", "httpMode", "dbName", "organization", "defaultBucket", "maxSeries"),
    # public/app/plugins/datasource/prometheus (PromOptions): the ones ecokit could use
    "prometheus": ("httpMethod", "timeInterval", "queryTimeout", "prometheusType", "prometheusVersion",
                   "cacheLevel", "incrementalQuerying", "disableMetricsLookup", "exemplarTraceIdDestinations"),
}
PLUGIN_SECURE_JSON_DATA = {"influxdb": ("token", "password"), "prometheus": ()}
# InfluxQuery (same types.ts) on top of DataQuery (refId, hide, queryType, datasource, key).
INFLUX_QUERY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["refId"],
    "properties": {
        "refId": {"type": "string"}, "hide": {"type": "boolean"}, "key": {"type": "string"},
        "queryType": {"type": "string"}, "datasource": {"type": "object"},
        "policy": {"type": "string"}, "measurement": {"type": "string"},
        "resultFormat": {"enum": ["time_series", "table", "logs"]}, "orderByTime": {"type": "string"},
        "tags": {"type": "array"}, "groupBy": {"type": "array"}, "select": {"type": "array"},
        "limit": {"type": ["string", "number"]}, "slimit": {"type": ["string", "number"]}, "tz": {"type": "string"},
        "fill": {"type": "string"}, "rawQuery": {"type": "boolean"}, "query": {"type": "string"},
        "alias": {"type": "string"}, "fromAnnotations": {"type": "boolean"}, "tagsColumn": {"type": "string"},
        "textColumn": {"type": "string"}, "timeEndColumn": {"type": "string"}, "titleColumn": {"type": "string"},
        "name": {"type": "string"}, "textEditor": {"type": "boolean"}, "adhocFilters": {"type": "array"},
    },
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _definition(schema: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A named definition of a schema file, as a schema that resolves its own refs."""
    return {**schema, "$ref": f"#/definitions/{name}"}


def _problems(validator: jsonschema.Draft7Validator, value: Any, where: str) -> list[Problem]:
    out = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        detail = deepest(error)
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in detail.absolute_path)
        out.append(Problem(f"{where}{path}", detail.message))
    return out


def panels(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every panel with its path, the panels of collapsed rows too."""
    for i, panel in enumerate(dashboard.get("panels", [])):
        yield f"panels[{i}]", panel
        for j, inner in enumerate(panel.get("panels", []) if panel.get("type") == "row" else []):
            yield f"panels[{i}].panels[{j}]", inner


class GrafanaSchemas:
    """The dashboard, panel and query schemas of one vendored folder."""

    def __init__(self, folder: Path) -> None:
        self.dashboard = jsonschema.Draft7Validator(_load(folder / "dashboard.jsonschema.json"))
        self.options: dict[str, jsonschema.Draft7Validator] = {}
        self.custom: dict[str, jsonschema.Draft7Validator] = {}
        for name in PANEL_SCHEMAS:
            schema = _load(folder / f"{name}.jsonschema.json")
            self.options[name] = jsonschema.Draft7Validator(_definition(schema, "Options"))
            if "FieldConfig" in schema.get("definitions", {}):
                self.custom[name] = jsonschema.Draft7Validator(_definition(schema, "FieldConfig"))
        self.queries = {"prometheus": jsonschema.Draft7Validator(_load(folder / "prometheus.jsonschema.json")),
                        "influxdb": jsonschema.Draft7Validator(INFLUX_QUERY)}

    def check_dashboard(self, dashboard: Mapping[str, Any], where: str) -> list[Problem]:
        problems = _problems(self.dashboard, dashboard, where)
        for path, panel in panels(dashboard):
            problems += self.check_panel(panel, f"{where}.{path}")
        return problems

    def check_panel(self, panel: Mapping[str, Any], where: str) -> list[Problem]:
        kind = panel.get("type")
        if kind == "row":
            return []
        if kind not in self.options:
            return [Problem(f"{where}.type", f"no schema for panel type {kind!r} (known: {', '.join(PANEL_SCHEMAS)})")]
        problems = _problems(self.options[kind], panel.get("options", {}), f"{where}.options")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            if kind in self.custom:
                problems += _problems(self.custom[kind], custom, f"{where}.fieldConfig.defaults.custom")
            elif custom:
                problems.append(Problem(f"{where}.fieldConfig.defaults.custom",
                                        f"a {kind} panel has no custom field options"))
        panel_ds = panel.get("datasource") or {}
        for i, target in enumerate(panel.get("targets", [])):
            ds = target.get("datasource") or panel_ds
            validator = self.queries.get(ds.get("type", ""))
            if validator is None:
                problems.append(Problem(f"{where}.targets[{i}]",
                                        f"no query schema for datasource type {ds.get('type')!r}"))
            else:
                problems += _problems(validator, target, f"{where}.targets[{i}]")
        return problems


def _unknown(keys: Any, known: Any, where: str, what: str) -> list[Problem]:
    if not isinstance(keys, Mapping):
        return [Problem(where, f"expected a mapping of {what}, got {keys!r}")]
    return [Problem(f"{where}.{k}", f"Grafana reads no {what} {k!r}") for k in keys if k not in known]


def check_datasources_file(doc: Mapping[str, Any], where: str = "datasources") -> list[Problem]:
    problems = _unknown(doc, DATASOURCE_FILE_KEYS, where, "datasources-file key")
    if doc.get("apiVersion") != 1:
        problems.append(Problem(f"{where}.apiVersion", "must be 1 (configsV1; 0 reads snake_case keys)"))
    for i, ds in enumerate(doc.get("datasources") or []):
        at = f"{where}.datasources[{i}]"
        problems += _unknown(ds, DATASOURCE_KEYS, at, "datasource key")
        for key in ("name", "type"):
            if not ds.get(key):
                problems.append(Problem(f"{at}.{key}", "required"))
        plugin = ds.get("type", "")
        json_known = (*HTTP_JSON_DATA, *PLUGIN_JSON_DATA.get(plugin, ()))
        for key in ds.get("jsonData") or {}:
            if key not in json_known and not HEADER_NAME.match(key):
                problems.append(Problem(f"{at}.jsonData.{key}", f"the {plugin} datasource reads no such option"))
        secure_known = (*HTTP_SECURE_JSON_DATA, *PLUGIN_SECURE_JSON_DATA.get(plugin, ()))
        for key in ds.get("secureJsonData") or {}:
            if key not in secure_known and not HEADER_VALUE.match(key):
                problems.append(Problem(f"{at}.secureJsonData.{key}", f"the {plugin} datasource reads no such secret"))
            match = HEADER_VALUE.match(key)
            if match and f"httpHeaderName{key[len('httpHeaderValue'):]}" not in (ds.get("jsonData") or {}):
                problems.append(Problem(f"{at}.secureJsonData.{key}", "a header value without its httpHeaderName"))
    for i, ds in enumerate(doc.get("deleteDatasources") or []):
        problems += _unknown(ds, DELETE_DATASOURCE_KEYS, f"{where}.deleteDatasources[{i}]", "key")
    return problems


def check_providers_file(doc: Mapping[str, Any], where: str = "providers") -> list[Problem]:
    problems = _unknown(doc, PROVIDER_FILE_KEYS, where, "dashboard-providers-file key")
    if doc.get("apiVersion") != 1:
        problems.append(Problem(f"{where}.apiVersion", "must be 1"))
    for i, provider in enumerate(doc.get("providers") or []):
        at = f"{where}.providers[{i}]"
        problems += _unknown(provider, PROVIDER_KEYS, at, "provider key")
        if provider.get("type", "file") == "file":
            options = provider.get("options") or {}
            problems += _unknown(options, FILE_PROVIDER_OPTIONS, f"{at}.options", "file-provider option")
            if not options.get("path"):
                problems.append(Problem(f"{at}.options.path", "a file provider needs a path"))
            if options.get("foldersFromFilesStructure") and provider.get("folder"):
                problems.append(Problem(f"{at}.folder", "must be empty with foldersFromFilesStructure"))
    return problems
