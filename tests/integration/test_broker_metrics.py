"""The default broker is observable: Mosquitto's $SYS reaches Prometheus through ecokit's
brokerstats service, and every query of the Broker and Services dashboards answers with
data from a real stack (Mosquitto, the processor, the shadow service, real Prometheus)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ecokit.clients import shadow_client
from ecokit.resources import dashboards_dir
from ecokit.stack import Stack
from ecokit.status import stack_status
from ecokit.testing import SyncClient, running_stack, write_project

FAST = {"prometheus": {"enabled": True, "scrape_interval": "1s"}, "broker": {"sys_interval": 1},
        "processor": {"offline_after": 3}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = write_project(tmp_path_factory.mktemp("metrics"), devices=["car-1"], stack="metrics", extra=FAST)
    with running_stack(config) as running:
        if "prometheus" not in running.recorded_services():
            pytest.skip("prometheus is not installed (apt-get install prometheus)")
        yield running


def url_of(stack: Stack, service: str) -> str:
    return stack_status(stack).web.get(service) or f"http://127.0.0.1:{stack.config.service_ports.model_dump()[service]}"


def promql(stack: Stack, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{url_of(stack, 'prometheus')}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def dashboard_queries(name: str) -> list[tuple[str, str, str]]:
    dashboard = json.loads((dashboards_dir() / name).read_text())
    return [(panel["title"], target.get("legendFormat", ""), target["expr"])
            for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target]


def traffic(stack: Stack) -> None:
    username, password = stack.device_credentials("car-1")
    host, port = stack.broker_endpoints()["mqtt"].removeprefix("mqtt://").rsplit(":", 1)
    with SyncClient(host, int(port), username=username, password=password) as car:
        car.connect()
        payload = {"v": 1, "vehicle": "car-1", "seq": 1, "ts": int(time.time() * 1000), "lat": 48.85, "lng": 2.35,
                   "speed": 30.0, "heading": 10.0, "fuel": 60.0, "odometer": 12.0, "engine": True,
                   "status": "moving"}
        car.publish("fleet/car-1/telemetry", json.dumps(payload), qos=1)
    with shadow_client(stack).connect() as shadows:
        assert shadows.update("car-1", desired={"publish_interval": 5}).accepted
        assert not shadows.get("no-such-thing").accepted  # a 404: a rejection with a code


def test_brokerstats_serves_mosquitto_sys_metrics(stack: Stack) -> None:
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = requests.get(f"{url_of(stack, 'brokerstats')}/metrics", timeout=5).text
        if "mosquitto_clients_connected" in text and "mosquitto_publish_messages_received_total" in text:
            break
        time.sleep(0.5)
    for metric in ("mosquitto_clients_connected", "mosquitto_publish_messages_received_total",
                   "mosquitto_bytes_sent_total", "mosquitto_uptime_seconds", "mosquitto_info{",
                   "ecokit_brokerstats_age_seconds"):
        assert metric in text, metric
    assert requests.get(f"{url_of(stack, 'brokerstats')}/readyz", timeout=5).status_code == 200


def test_every_broker_and_services_dashboard_query_has_data_on_mosquitto(stack: Stack) -> None:
    traffic(stack)
    queries = [q for q in dashboard_queries("broker.json") + dashboard_queries("services.json")
               if "(EMQX)" not in q[1]]
    assert len(queries) >= 20
    deadline = time.monotonic() + 60
    empty = queries
    while time.monotonic() < deadline:
        empty = [q for q in empty if not promql(stack, q[2].replace("$__range", "5m"))]
        if not empty:
            break
        time.sleep(1)
    assert empty == [], "panels without data on a Mosquitto stack"
    connected = promql(stack, "sum(mosquitto_clients_connected)")
    assert float(connected[0]["value"][1]) >= 4, "bridge, processor, shadow and brokerstats are connected"
    jobs = {r["metric"]["job"] for r in promql(stack, 'up{job=~"ecokit-.*"} == 1')}
    assert jobs >= {"ecokit-bridge", "ecokit-processor", "ecokit-shadow", "ecokit-brokerstats"}
