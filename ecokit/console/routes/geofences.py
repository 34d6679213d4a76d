"""Geofences (the stack's ``config/geofences.geojson``, through the same ``GeofenceStore`` as
`ecokit geofences`: validated as a whole, written atomically, picked up by the running
processor) and the feed of geofence events and alerts."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from starlette.responses import Response

from ecokit.console.errors import ApiError, bad_request, json_response, not_found
from ecokit.console.routes.auth import console_of
from ecokit.console.schemas import ErrorResponse
from ecokit.console.service import ConsoleService
from ecokit.geofence.model import GEOFENCE_ID, GeofenceError
from ecokit.geofence.store import GeofenceStore

router = APIRouter(prefix="/api", tags=["geofences"], responses={
    401: {"model": ErrorResponse}, 400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
    409: {"model": ErrorResponse}})

FenceId = Annotated[str, Path(max_length=64, description="the geofence's id")]
EXAMPLE = {"type": "Feature", "properties": {"name": "Depot north", "tags": ["depot"], "min_inside_s": 30},
           "geometry": {"type": "Polygon", "coordinates": [[[2.30, 48.86], [2.32, 48.86], [2.32, 48.87],
                                                            [2.30, 48.86]]]}}
FeatureBody = Annotated[dict[str, Any], Body(description="a GeoJSON Feature: Polygon or MultiPolygon, positions "
                                                         "[longitude, latitude], properties name, tags, "
                                                         "min_inside_s, min_outside_s", examples=[EXAMPLE])]
EDITABLE = ("name", "tags", "min_inside_s", "min_outside_s")


def _store(service: ConsoleService, *, write: bool = False) -> GeofenceStore:
    store = service.geofence_store()
    if store is None:
        raise ApiError(404, "not_found", "this stack has no geofence file")
    if write and not service.config.geofences.writable:
        raise ApiError(409, "read_only", "the console holds a copy of the geofence file here (docker runtime): "
                                         "change config/geofences.geojson with `ecokit geofences import`")
    return store


def _invalid(exc: GeofenceError) -> ApiError:
    problems = [p.replace("feature #1", "the geofence", 1).replace("the geofence: ", "", 1) for p in exc.problems]
    return ApiError(400, "invalid_geofence", "; ".join(problems))


def _current(store: GeofenceStore) -> list[dict[str, Any]]:
    try:
        return [dict(f.feature) for f in store.load().fences]
    except GeofenceError as exc:
        raise ApiError(409, "invalid_file", "the geofence file is invalid (the processor keeps its last valid "
                                            f"geofences): {'; '.join(exc.problems)}") from None


def _new_id(name: str, taken: set[str]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "zone"
    while True:
        candidate = f"{slug}-{secrets.token_hex(2)}"
        if candidate not in taken:
            return candidate


def _checked_feature(body: dict[str, Any], fence_id: str) -> dict[str, Any]:
    if body.get("type") != "Feature":
        raise bad_request("type", 'a geofence is a GeoJSON Feature ({"type": "Feature", ...})')
    if body.get("id") not in (None, fence_id):
        raise bad_request("id", f"the body's id {body.get('id')!r} is not the geofence's ({fence_id!r})")
    return {**body, "id": fence_id}


@router.get("/geofences", summary="Every geofence, as a GeoJSON FeatureCollection")
def list_geofences(request: Request) -> Response:
    service = console_of(request)
    store = _store(service)
    return json_response({"type": "FeatureCollection", "features": _current(store),
                          "writable": service.config.geofences.writable})


@router.get("/geofences/{fence_id}", summary="One geofence (a GeoJSON Feature)")
def get_geofence(request: Request, fence_id: FenceId) -> Response:
    for feature in _current(_store(console_of(request))):
        if feature.get("id") == fence_id:
            return json_response(feature)
    raise not_found(f"no geofence {fence_id!r}", "fence_id")


@router.post("/geofences", status_code=201, summary="Create a geofence (its id is made from the name if absent)")
def create_geofence(request: Request, body: FeatureBody) -> Response:
    store = _store(console_of(request), write=True)
    taken = {str(f.get("id")) for f in _current(store)}
    fence_id = body.get("id")
    if fence_id is None:
        name = (body.get("properties") or {}).get("name")
        fence_id = _new_id(name if isinstance(name, str) else "", taken)
    if not isinstance(fence_id, str) or not GEOFENCE_ID.match(fence_id):
        raise bad_request("id", f"{fence_id!r} is not a geofence id (letters, digits, '_', '.', ':', '-')")
    if fence_id in taken:
        raise ApiError(409, "conflict", f"a geofence {fence_id!r} exists; PUT /api/geofences/{fence_id} changes it",
                       "id")
    try:
        fence = store.upsert(_checked_feature(body, fence_id))
    except GeofenceError as exc:
        raise _invalid(exc) from None
    return json_response(dict(fence.feature), status=201)


@router.put("/geofences/{fence_id}", summary="Replace a geofence (geometry and properties)")
def replace_geofence(request: Request, fence_id: FenceId, body: FeatureBody) -> Response:
    store = _store(console_of(request), write=True)
    if fence_id not in {f.get("id") for f in _current(store)}:
        raise not_found(f"no geofence {fence_id!r}", "fence_id")
    try:
        fence = store.upsert(_checked_feature(body, fence_id))
    except GeofenceError as exc:
        raise _invalid(exc) from None
    return json_response(dict(fence.feature))


@router.patch("/geofences/{fence_id}", summary="Rename a geofence, or change its tags or min times")
def patch_geofence(request: Request, fence_id: FenceId, body: Annotated[dict[str, Any], Body(
        description="any of name, tags, min_inside_s, min_outside_s (null removes a min time)",
        examples=[{"name": "Depot north (new gate)"}])]) -> Response:
    store = _store(console_of(request), write=True)
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        raise bad_request(unknown[0], f"not a geofence property the console changes (only {', '.join(EDITABLE)}; "
                                      "PUT replaces the geometry)")
    current = next((f for f in _current(store) if f.get("id") == fence_id), None)
    if current is None:
        raise not_found(f"no geofence {fence_id!r}", "fence_id")
    properties = {**(current.get("properties") or {}), **body}
    properties = {k: v for k, v in properties.items() if v is not None}
    try:
        fence = store.upsert({**current, "properties": properties})
    except GeofenceError as exc:
        raise _invalid(exc) from None
    return json_response(dict(fence.feature))


@router.delete("/geofences/{fence_id}", status_code=204, summary="Delete a geofence")
def delete_geofence(request: Request, fence_id: FenceId) -> Response:
    store = _store(console_of(request), write=True)
    try:
        found = store.delete(fence_id)
    except GeofenceError as exc:
        raise ApiError(409, "invalid_file", f"the geofence file is invalid: {'; '.join(exc.problems)}") from None
    if not found:
        raise not_found(f"no geofence {fence_id!r}", "fence_id")
    return Response(status_code=204)


@router.get("/events", summary="The latest geofence events and alerts, newest first")
def events(request: Request,
           limit: Annotated[int, Query(ge=1, le=500, description="at most this many")] = 100,
           vehicle: Annotated[str | None, Query(max_length=64, description="only this vehicle")] = None) -> Response:
    return json_response({"items": console_of(request).recent_events(limit, vehicle)})
