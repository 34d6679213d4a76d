"""The API's JSON shapes (docs/console.md), as pydantic models: request bodies are validated
with them, responses are documented by them in the OpenAPI document at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ecokit.console.lifecycle import State

VehicleStatus = Literal["moving", "idle", "parked", "offline", "unknown"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    code: str = Field(description="bad_request, unauthorized, not_found, conflict, too_large, unknown_command, "
                                  "unknown_vehicle, unavailable, timeout")
    message: str
    field: str | None = Field(description="the parameter or body path at fault, as the caller wrote it")


class ErrorResponse(BaseModel):
    error: ErrorBody


class Vehicle(_Out):
    id: str
    lat: float | None = Field(description="degrees; null until the first telemetry")
    lng: float | None = Field(description="degrees; null until the first telemetry")
    ts: int | None = Field(description="device time of the newest fix, epoch ms")
    speed: float | None = Field(description="km/h, as the device reports it")
    heading: float | None = Field(description="degrees 0-360, 0 = north, clockwise")
    fuel: float | None = Field(description="percent")
    odometer: float | None = Field(description="km")
    engine: bool | None
    status: VehicleStatus
    online: bool | None
    last_seen: int | None = Field(description="newest device timestamp seen, epoch ms")
    derived_speed: float | None = Field(description="km/h between the last two fixes (fleet processor)")
    seq: int | None


class VehiclePage(_Out):
    items: list[Vehicle]
    total: int = Field(description="every match, not just this page")
    limit: int
    offset: int


class HistoryPoint(_Out):
    ts: int
    lat: float
    lng: float
    speed: float | None
    fuel: float | None
    heading: float | None


class HistoryResponse(_Out):
    vehicle: str
    since: int
    until: int
    count: int = Field(description="points the range holds in InfluxDB")
    downsampled: bool
    points: list[HistoryPoint]


class Stats(_Out):
    ts: int
    vehicles: dict[str, int]
    messages: dict[str, Any]
    latency_ms: dict[str, Any]
    stream: dict[str, Any]
    pipeline: dict[str, Any]


class DeviceItem(_Out):
    id: str
    client_cert: bool
    known: bool
    online: bool | None


class Devices(_Out):
    items: list[DeviceItem]


class CommandType(_Out):
    name: str
    args: dict[str, str] = Field(description="argument name → JSON type")
    description: str


class CommandTypes(_Out):
    items: list[CommandType]


class HistoryEntry(_Out):
    state: State
    ts: int


class Command(_Out):
    id: str
    batch: str
    vehicle: str
    command: str
    args: dict[str, Any]
    state: State
    created: int
    updated: int
    created_at: str
    updated_at: str
    expires: int
    timeout_s: float
    result: str | None
    detail: str | None
    latency_ms: float | None = Field(description="the vehicle's handling time")
    round_trip_ms: float | None = Field(description="from sent to the vehicle's ack")
    history: list[HistoryEntry]


class CommandList(_Out):
    items: list[Command]


class CommandBatch(_Out):
    batch: str
    items: list[Command]


class CommandRequest(BaseModel):
    """Exactly one of ``vehicle``, ``vehicles`` or ``all``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"vehicle": "vehicle-0007", "command": "set_interval", "args": {"seconds": 5}}]})

    vehicle: str | None = Field(None, max_length=64)
    vehicles: list[str] | None = Field(None, min_length=1)
    all: bool = False
    command: str = Field(max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, ge=0.1, le=3600, description="sent → device ack")
    expires_s: float | None = Field(None, ge=1, le=604_800, description="queued → expired")


class ShadowPatch(BaseModel):
    """``{"desired": {...}}`` or ``{"state": {"desired": {...}}}``; a null value deletes a field."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"desired": {"publish_interval": 2}}]})

    desired: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    version: int | None = Field(None, ge=0, description="optimistic concurrency: the version you read")


class PageConfig(_Out):
    stack: str
    version: str
    tiles: dict[str, Any]
    batch_interval_ms: int
    stats_interval_ms: int
    history: dict[str, Any]
    commands: dict[str, Any]
