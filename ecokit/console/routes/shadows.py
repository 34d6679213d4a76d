"""Device shadows through the shadow service (MQTT request/response as ``ecokit-console``).
The console reads whole shadows and may change only ``desired``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from ecokit.console.errors import ApiError, bad_request, json_response
from ecokit.console.routes.auth import console_of
from ecokit.console.schemas import ErrorResponse, ShadowPatch
from ecokit.console.service import ConsoleService
from ecokit.errors import BrokerError
from ecokit.shadow.client import ShadowReply, ShadowTimeout

router = APIRouter(prefix="/api", tags=["shadows"], responses={
    401: {"model": ErrorResponse}, 400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
    503: {"model": ErrorResponse}, 504: {"model": ErrorResponse}})

# Thing and shadow names are topic levels: no '/', '+', '#'.
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TIMEOUT = 5.0
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
         413: "too_large", 415: "bad_request", 429: "throttled"}

Thing = Annotated[str, Path(max_length=128, description="the thing (vehicle) id")]
ShadowName = Annotated[str, Query(max_length=64, description="a named shadow; empty: the classic shadow")]


def _check(thing: str, name: str) -> None:
    if not NAME.match(thing):
        raise bad_request("thing", f"{thing!r} is not a thing name (letters, digits, '_', '.', ':', '-')")
    if name and not NAME.match(name):
        raise bad_request("name", f"{name!r} is not a shadow name (letters, digits, '_', '.', ':', '-')")


def _ask(service: ConsoleService, operation: str, thing: str, name: str, body: dict[str, Any] | None = None) -> \
        ShadowReply:
    try:
        client = service.shadow_client()
        if operation == "get":
            return client.get(thing, name=name, timeout=TIMEOUT)
        return client.request("update", thing, body, name=name, timeout=TIMEOUT)
    except ShadowTimeout as exc:
        service.drop_shadow_client()
        raise ApiError(504, "timeout", f"the shadow service did not answer: {exc}") from None
    except BrokerError as exc:
        service.drop_shadow_client()
        raise ApiError(503, "unavailable", f"the broker: {exc}") from None


def _answer(reply: ShadowReply) -> Response:
    doc = {k: v for k, v in reply.document.items() if k != "clientToken"}
    if reply.accepted:
        return json_response(doc)
    code = reply.code or 500
    status = code if 400 <= code < 600 else 502
    raise ApiError(status, CODES.get(code, "shadow_error"), str(doc.get("message", "rejected by the shadow service")))


@router.get("/shadows/{thing}", summary="A device shadow (desired, reported, delta, metadata, version)")
def get_shadow(request: Request, thing: Thing, name: ShadowName = "") -> Response:
    _check(thing, name)
    return _answer(_ask(console_of(request), "get", thing, name))


@router.patch("/shadows/{thing}", summary="Change a shadow's desired state")
def patch_shadow(request: Request, thing: Thing, body: ShadowPatch, name: ShadowName = "") -> Response:
    _check(thing, name)
    if body.desired is not None and body.state is not None:
        raise bad_request("state", "give either desired or state.desired, not both")
    if body.state is not None:
        extra = sorted(set(body.state) - {"desired"})
        if extra:
            raise bad_request(f"state.{extra[0]}", "the console may change only desired")
        if "desired" not in body.state:
            raise bad_request("state.desired", "missing")
        desired = body.state["desired"]
        if desired is not None and not isinstance(desired, dict):
            raise bad_request("state.desired", "must be an object (or null to clear it)")
    elif body.desired is not None:
        desired = body.desired
    else:
        raise bad_request("desired", "missing: give {\"desired\": {...}}")
    update: dict[str, Any] = {"state": {"desired": desired}}
    if body.version is not None:
        update["version"] = body.version
    return _answer(_ask(console_of(request), "update", thing, name, update))
