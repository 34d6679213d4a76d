"""The daily analytics task as InfluxDB 2.7 would take it: its `option task`, and every
request ecokit sends to create, update or delete it, checked against InfluxDB's OpenAPI
contract (InfluxDB 2 cannot run here; the answers come from ``captured_requests``)."""

from __future__ import annotations

import json

import pytest

from ecokit.analytics import TASK_NAME, apply_task, daily_rollup, task_create_request
from ecokit.config.analytics import DailyAnalyticsConfig
from ecokit.schemacheck import report
from ecokit.schemacheck.influx import Request, captured_requests, check_flux_task
from ecokit.schemacheck.openapi import OpenApi
from ecokit.store.influx import InfluxEndpoint, InfluxV1

ROLLUP = daily_rollup(DailyAnalyticsConfig())


@pytest.mark.parametrize("every", ["15m", "90s", "2h", "24h"])
def test_the_daily_task_fits_the_task_contract(influx_api: OpenApi, every: str) -> None:
    body = task_create_request(daily_rollup(DailyAnalyticsConfig(every=every)), bucket="fleet", org="ecokit")
    assert report(check_flux_task(body["flux"], "analytics.daily")) == ""
    assert influx_api.check_request("POST", "/api/v2/tasks", headers={"Authorization": "Token t"},
                                    media_type="application/json", body=body) == []


def _apply(influx_api: OpenApi, tasks: list[dict[str, str]], rollup: object) -> tuple[str, list[Request]]:
    client = InfluxV1(InfluxEndpoint("http://influxdb:8086", "fleet", token="t", version=2))
    answers = {"/api/v2/tasks": (200, json.dumps({"tasks": tasks}).encode())}
    with client, captured_requests(client.session, answers) as sent:
        outcome = apply_task(client, rollup, bucket="fleet", org="ecokit")  # type: ignore[arg-type]
    for request in sent:
        body = json.loads(request.body) if request.body else None
        assert influx_api.check_request(request.method, request.path, query=request.query, headers=request.headers,
                                        media_type=request.media_type, body=body) == [], request
    return outcome, sent


def test_the_task_is_created_once_updated_when_it_changes_and_deleted_when_off(influx_api: OpenApi) -> None:
    outcome, sent = _apply(influx_api, [], ROLLUP)
    assert outcome == "created"
    assert [(r.method, r.path) for r in sent] == [("GET", "/api/v2/tasks"), ("POST", "/api/v2/tasks")]
    assert sent[0].query == {"name": TASK_NAME, "org": "ecokit"}
    flux = json.loads(sent[1].body or b"{}")["flux"]
    same = [{"id": "0a1b", "name": TASK_NAME, "flux": flux, "status": "active"}]
    assert _apply(influx_api, same, ROLLUP)[0] == "unchanged"
    outcome, sent = _apply(influx_api, same, daily_rollup(DailyAnalyticsConfig(every="5m")))
    assert outcome == "updated"
    assert [(r.method, r.path) for r in sent][1] == ("PATCH", "/api/v2/tasks/0a1b")
    assert "every: 5m" in json.loads(sent[1].body or b"{}")["flux"]
    outcome, sent = _apply(influx_api, same, None)
    assert outcome == "deleted"
    assert [(r.method, r.path) for r in sent][1] == ("DELETE", "/api/v2/tasks/0a1b")


def test_a_refresh_on_influxdb_2_is_a_flux_query_the_contract_takes(influx_api: OpenApi) -> None:
    client = InfluxV1(InfluxEndpoint("http://influxdb:8086", "fleet", token="t", version=2))
    csv = b",result,table,_time,_value\n,_result,0,2026-01-01T00:00:00Z,1\n,_result,0,2026-01-02T00:00:00Z,2\n"
    with client, captured_requests(client.session, {"/api/v2/query": (200, csv)}) as sent:
        rows = client.flux(ROLLUP.flux("fleet", "ecokit", start='time(v: "2026-01-01T00:00:00Z")'), org="ecokit")
    assert rows == 2
    (request,) = sent
    assert influx_api.check_request("POST", "/api/v2/query", query=request.query, headers=request.headers,
                                    media_type=request.media_type, body=json.loads(request.body or b"{}")) == []
