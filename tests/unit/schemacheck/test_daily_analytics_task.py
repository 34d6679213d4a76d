"""The daily analytics task as InfluxDB 2.7 would take it: its `option task` and the
POST /api/v2/tasks body influxdb-client sends (InfluxDB 2 cannot run here)."""

from __future__ import annotations

import pytest

from ecokit.analytics import daily_rollup, task_create_request
from ecokit.config.analytics import DailyAnalyticsConfig
from ecokit.schemacheck import report
from ecokit.schemacheck.influx import check_flux_task
from ecokit.schemacheck.openapi import OpenApi


@pytest.mark.parametrize("every", ["15m", "90s", "2h", "24h"])
def test_the_daily_task_fits_the_task_contract(influx_api: OpenApi, every: str) -> None:
    rollup = daily_rollup(DailyAnalyticsConfig(every=every))
    request = task_create_request(rollup, bucket="fleet", org="ecokit")
    assert report(check_flux_task(request.flux, "analytics.daily")) == ""
    body = {request.attribute_map[key]: value for key, value in request.to_dict().items() if value is not None}
    assert set(body) == {"org", "flux", "status", "description"}
    assert influx_api.check_request("POST", "/api/v2/tasks", headers={"Authorization": "Token t"},
                                    media_type="application/json", body=body) == []
