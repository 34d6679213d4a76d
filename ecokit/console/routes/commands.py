"""Commands: what the devices understand, sending (one vehicle, a list, or all) and following
each command's life (docs/console.md, Commands). Nothing reaches the broker unless the
whole request is valid."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from ecokit.console.errors import ApiError, bad_request, json_response, not_found
from ecokit.console.lifecycle import STATES
from ecokit.console.routes.auth import console_of
from ecokit.console.routes.fleet import VEHICLE_ID, split_list
from ecokit.console.schemas import Command, CommandBatch, CommandList, CommandRequest, CommandTypes, ErrorResponse
from ecokit.console.service import ConsoleService
from ecokit.sim.commands import COMMAND_SPECS, CommandError, validate
from ecokit.sim.commands import Command as WireCommand

router = APIRouter(prefix="/api", tags=["commands"], responses={401: {"model": ErrorResponse},
                                                                400: {"model": ErrorResponse}})
SPECS = {spec.name: spec for spec in COMMAND_SPECS}


@router.get("/command-types", response_model=CommandTypes, summary="The commands the devices understand")
def command_types() -> Response:
    return json_response({"items": [{"name": s.name, "args": dict(s.args), "description": s.description}
                                    for s in COMMAND_SPECS]})


def _targets(service: ConsoleService, body: CommandRequest) -> list[str]:
    given = [name for name, present in (("vehicle", body.vehicle is not None), ("vehicles", body.vehicles is not None),
                                        ("all", body.all)) if present]
    if len(given) != 1:
        raise bad_request("vehicle" if not given else given[1],
                          "give exactly one of vehicle, vehicles or all" if given else
                          "give the target: vehicle, vehicles or all: true")
    max_fanout = service.settings.commands.max_fanout
    registered = service.devices.devices
    if body.all:
        with service.store.lock:
            ids = sorted(set(registered) | set(service.store.ids()))
        if not ids:
            raise ApiError(422, "unknown_vehicle", "no vehicle is registered or has been seen", "all")
        if len(ids) > max_fanout:
            raise ApiError(413, "too_large", f"all means {len(ids)} vehicles, above console.commands.max_fanout "
                           f"({max_fanout})", "all")
        return ids
    if body.vehicle is not None:
        wanted, fields = [body.vehicle], ["vehicle"]
    else:
        assert body.vehicles is not None
        wanted, fields = body.vehicles, [f"vehicles[{i}]" for i in range(len(body.vehicles))]
        if len(wanted) > max_fanout:
            raise ApiError(413, "too_large", f"{len(wanted)} vehicles, above console.commands.max_fanout "
                           f"({max_fanout})", "vehicles")
    for vid, field in zip(wanted, fields, strict=True):
        if not VEHICLE_ID.match(vid):
            raise bad_request(field, f"{vid!r} is not a vehicle id (letters, digits, '_', '.', '-')")
    with service.store.lock:
        for vid, field in zip(wanted, fields, strict=True):
            if vid not in registered and service.store.get(vid) is None:
                raise ApiError(422, "unknown_vehicle", f"{field}: no vehicle {vid!r} is registered or has been seen",
                               field)
    return list(dict.fromkeys(wanted))


def _check_command(body: CommandRequest) -> None:
    spec = SPECS.get(body.command)
    if spec is None:
        raise ApiError(422, "unknown_command", f"command: {body.command!r} is not a command the devices know "
                       f"({', '.join(SPECS)})", "command")
    try:
        validate(WireCommand("check", body.command, body.args))
    except CommandError as exc:
        unexpected = sorted(set(body.args) - set(spec.args))
        field = (f"args.{unexpected[0]}" if unexpected else
                 f"args.{next(iter(spec.args))}" if spec.args else "args")
        raise bad_request(field, str(exc)) from None


@router.post("/commands", status_code=202, response_model=CommandBatch, summary="Send a command",
             responses={413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
def send(request: Request, body: CommandRequest) -> Response:
    """One command per vehicle, each with its own id; online vehicles get it now, offline
    ones when they come online (until `expires_s`)."""
    service = console_of(request)
    _check_command(body)
    vehicles = _targets(service, body)
    defaults = service.settings.commands
    batch, records = service.engine.submit(vehicles, body.command, body.args,
                                           timeout_s=body.timeout_s or defaults.timeout_s,
                                           expires_s=body.expires_s or defaults.expires_s)
    return json_response({"batch": batch, "items": [r.to_api() for r in records]}, status=202)


@router.get("/commands", response_model=CommandList, summary="Commands, newest first")
def list_commands(
    request: Request,
    vehicle: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[list[str], Query(description="repeat or comma-separate")] = [],  # noqa: B006
    batch: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    states = split_list(state)
    bad = [s for s in states if s not in STATES]
    if bad:
        raise bad_request("state", f"{bad[0]!r} is not one of {', '.join(STATES)}")
    records = console_of(request).engine.store.recent(vehicle=vehicle, states=states, batch=batch, limit=limit)
    return json_response({"items": [r.to_api() for r in records]})


@router.get("/commands/{command_id}", response_model=Command, summary="One command",
            responses={404: {"model": ErrorResponse}})
def get_command(request: Request, command_id: Annotated[str, Path(max_length=64)]) -> Response:
    record = console_of(request).engine.get(command_id)
    if record is None:
        raise not_found(f"no command {command_id!r}", "command_id")
    return json_response(record.to_api())
