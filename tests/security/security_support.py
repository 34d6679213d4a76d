"""Helpers of the security suite (tests/security): clients by principal, service metrics
and health, InfluxDB counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1
from ecokit.testing import SyncClient, service_metrics

DEVICES = ["v1", "v2", "v3", "v4", "v5", "v6"]


def client(stack: Stack, user: str = "ecokit-admin", *, client_id: str | None = None,
           clean_start: bool = True, session_expiry: int | None = None) -> SyncClient:
    """A connected client: devices on the device listener, ecokit's users on the internal one."""
    if user.startswith("ecokit-"):
        username, password = stack.service_credentials(user)
        port = stack.config.broker.ports.internal
    else:
        username, password = stack.device_credentials(user)
        port = stack.config.broker.ports.mqtt
    c = SyncClient("127.0.0.1", port, username=username, password=password,
                   client_id=client_id, clean_start=clean_start, session_expiry=session_expiry)
    reason, _, _ = c.connect()
    assert not reason.is_failure, f"{user} could not connect: {reason}"
    return c


def metrics(stack: Stack, service: str) -> dict[str, float]:
    return service_metrics(stack, service)


def healthz(stack: Stack, service: str) -> int:
    port = getattr(stack.config.service_ports, service)
    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code


def count(stack: Stack, q: str) -> int:
    with InfluxV1(stack.influx_endpoint("reader")) as reader:
        rows = list(reader.rows(q))
    return int(next(iter(v for k, v in rows[0].items() if k.startswith("count")))) if rows else 0


def project_of(stack: Stack) -> Path:
    assert stack.loaded.config_file is not None
    return stack.loaded.config_file


def telemetry(vehicle: str, seq: int, ts: int, **overrides: Any) -> bytes:
    """A full simulator telemetry message (docs/DEVELOPING.md, Wire formats); ``None`` drops a key."""
    doc: dict[str, Any] = {"v": 1, "vehicle": vehicle, "seq": seq, "ts": ts, "lat": 52.5, "lng": 13.4,
                           "speed": 40.0, "heading": 90.0, "fuel": 50.0, "odometer": 1000.0 + seq,
                           "engine": True, "status": "moving"}
    for key, value in overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()
