"""Vehicles (last known state, filters, paging), a vehicle's history, fleet stats, devices."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from ecokit.config.registry import DEVICE_ID
from ecokit.console.errors import ApiError, bad_request, json_response, not_found
from ecokit.console.history import parse_instant, vehicle_history
from ecokit.console.routes.auth import console_of
from ecokit.console.schemas import Devices, ErrorResponse, HistoryResponse, Stats, Vehicle, VehiclePage
from ecokit.console.state import STATUSES, VehicleFilter
from ecokit.errors import StoreError

router = APIRouter(prefix="/api", tags=["fleet"], responses={401: {"model": ErrorResponse},
                                                             400: {"model": ErrorResponse}})

# A vehicle id is a device id: a topic level and an MQTT username.
VEHICLE_ID = DEVICE_ID
VehicleId = Annotated[str, Path(description="the vehicle's id (its MQTT username)", max_length=64)]


def split_list(values: list[str]) -> list[str]:
    """``?status=a&status=b`` and ``?status=a,b`` alike."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise bad_request("bbox", "expected minLng,minLat,maxLng,maxLat")
    try:
        min_lng, min_lat, max_lng, max_lat = (float(p) for p in parts)
    except ValueError:
        raise bad_request("bbox", "expected four numbers: minLng,minLat,maxLng,maxLat") from None
    if not all(math.isfinite(v) for v in (min_lng, min_lat, max_lng, max_lat)):
        raise bad_request("bbox", "expected finite numbers")
    if not (-180 <= min_lng <= 180 and -180 <= max_lng <= 180):
        raise bad_request("bbox", "longitudes must be within [-180, 180]")
    if not (-90 <= min_lat <= max_lat <= 90):
        raise bad_request("bbox", "latitudes must be within [-90, 90] with minLat <= maxLat")
    return min_lng, min_lat, max_lng, max_lat


def check_vehicle_id(vehicle_id: str, field: str = "vehicle_id") -> str:
    if not VEHICLE_ID.match(vehicle_id):
        raise bad_request(field, f"{vehicle_id!r} is not a vehicle id (letters, digits, '_', '.', '-')")
    return vehicle_id


@router.get("/vehicles", response_model=VehiclePage, summary="Vehicles, filtered and paged")
def vehicles(
    request: Request,
    status: Annotated[list[str], Query(description="moving, idle, parked, offline, unknown; repeat or "
                                                   "comma-separate")] = [],  # noqa: B006 (FastAPI copies it)
    min_fuel: Annotated[float | None, Query(ge=0, le=100, description="fuel >= this percent")] = None,
    bbox: Annotated[str | None, Query(description="minLng,minLat,maxLng,maxLat")] = None,
    q: Annotated[str | None, Query(max_length=64, description="substring of the id, case-insensitive")] = None,
    online: Annotated[bool | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    statuses = split_list(status)
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise bad_request("status", f"{unknown[0]!r} is not one of {', '.join(STATUSES)}")
    flt = VehicleFilter(statuses=frozenset(statuses), min_fuel=min_fuel,
                        bbox=parse_bbox(bbox) if bbox is not None else None, q=q or None, online=online)
    store = console_of(request).store
    with store.lock:
        total, items = store.query(flt, limit=limit, offset=offset)
    return json_response({"items": items, "total": total, "limit": limit, "offset": offset})


@router.get("/vehicles/{vehicle_id}", response_model=Vehicle, summary="One vehicle's last known state",
            responses={404: {"model": ErrorResponse}})
def vehicle(request: Request, vehicle_id: VehicleId) -> Response:
    check_vehicle_id(vehicle_id)
    store = console_of(request).store
    with store.lock:
        v = store.get(vehicle_id)
        doc = v.full() if v is not None else None
    if doc is None:
        raise not_found(f"no vehicle {vehicle_id!r} has been seen", "vehicle_id")
    return json_response(doc)


@router.get("/vehicles/{vehicle_id}/history", response_model=HistoryResponse,
            summary="A vehicle's fixes from InfluxDB, downsampled",
            responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
def history(
    request: Request, vehicle_id: VehicleId,
    since: Annotated[str | None, Query(description="a duration ago (15m, 1h, 2d), ISO 8601 or epoch ms")] = None,
    until: Annotated[str | None, Query(description="as `since`; default now")] = None,
    max_points: Annotated[int | None, Query(ge=2, description="at most this many points")] = None,
) -> Response:
    service = console_of(request)
    check_vehicle_id(vehicle_id)
    settings = service.settings.history
    limit = settings.max_points_limit
    if max_points is not None and max_points > limit:
        raise bad_request("max_points", f"must be at most {limit} (console.history.max_points_limit)")
    now = int(time.time() * 1000)
    try:
        start = parse_instant(since or settings.default_since, now_ms=now)
    except ValueError as exc:
        raise bad_request("since", str(exc)) from None
    try:
        end = parse_instant(until, now_ms=now) if until else now
    except ValueError as exc:
        raise bad_request("until", str(exc)) from None
    if start >= end:
        raise bad_request("since", "must be before until")
    with service.store.lock:
        seen = service.store.get(vehicle_id) is not None
    if not seen and vehicle_id not in service.devices.devices:
        raise not_found(f"no vehicle {vehicle_id!r} is registered or has been seen", "vehicle_id")
    source = service.config.history
    if source.measurement is None:
        raise ApiError(503, "unavailable", "no rule stores fleet/+/telemetry in InfluxDB, so there is no history")
    try:
        with service.influx() as client:
            result = vehicle_history(client, measurement=source.measurement, tag=source.tag, vehicle=vehicle_id,
                                     since=start, until=end, max_points=max_points or settings.max_points)
    except StoreError as exc:
        raise ApiError(503, "unavailable", f"InfluxDB: {exc}") from None
    return json_response(result.to_api())


@router.get("/stats", response_model=Stats, summary="Fleet counters, message rate, latency, the pipeline")
def stats(request: Request) -> Response:
    return json_response(console_of(request).stats_body())


@router.get("/devices", response_model=Devices, summary="The stack's device registry (never passwords)")
def devices(request: Request) -> Response:
    service = console_of(request)
    registered = service.devices.devices
    with service.store.lock:
        items = []
        for device_id in sorted(registered):
            v = service.store.get(device_id)
            items.append({"id": device_id, "client_cert": registered[device_id], "known": v is not None,
                          "online": v.online if v is not None else None})
    return json_response({"items": items})
