"""The device shadow state machine: AWS IoT Device Shadow semantics, no I/O.

``handle(record, request, now)`` takes the stored record of one shadow (or None), one
request (get / update / delete with its raw payload) and the time, and returns the new
record plus the documents to publish. The MQTT service, the persistence and the CLI are
shells around it; everything that decides what a shadow holds lives here.

Choices where the AWS documentation is silent or contradictory (see docs/shadow.md):

- Versions start at 1 with the update that creates a shadow. Delete keeps the version: the
  delete reply carries it, and a shadow recreated within 48 hours continues from it; later
  it starts again at 1.
- ``/update/documents`` of the update that creates a shadow has ``"previous": null``.
- ``/update/delta`` is published after an accepted update whose request carries a
  ``desired`` section and leaves a non-empty delta ("the request state document contains
  different values for desired and reported"). A reported-only update never publishes one:
  a device that reports a value other than the desired one (a clamped setting) would
  otherwise be sent the same delta after each of its own reports. Devices learn pending
  deltas at (re)connect with a ``get``, whose reply carries ``state.delta``.
- A ``clientToken`` in a get or delete payload is echoed (the AWS SDKs send one).
- The depth limit is 6 levels of nesting inside ``desired``/``reported`` (AWS's error text),
  which is 8 counted from the document root (``state`` = 1), the figure of the quota table.
- The 8 KB limit is on the merged stored state: compact UTF-8 JSON of desired + reported.
- JSON comparison for the delta is type-strict for booleans (``true`` != ``1``) and treats
  ``1`` and ``1.0`` as equal (one JSON number).
- Objects emptied by null deletes are kept as ``{}``; ``null`` on the object removes it.
- ``null`` inside an array is refused with 400 "State contains an invalid node".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

Json: TypeAlias = Any
JsonObject: TypeAlias = dict[str, Any]
Operation = Literal["get", "update", "delete"]
Section = Literal["desired", "reported"]

SECTIONS: tuple[Section, ...] = ("desired", "reported")
OPERATIONS: tuple[Operation, ...] = ("get", "update", "delete")

MAX_CLIENT_TOKEN_BYTES = 64
MAX_STATE_BYTES = 8 * 1024
MAX_DEPTH = 6
MAX_REQUEST_BYTES = 128 * 1024
# Named shadows one thing may have (AWS sets no documented figure; an unbounded number
# lets one device fill the service's disk). Creating one more is refused with 400.
MAX_NAMED_SHADOWS = 25
DELETED_VERSION_MEMORY_S = 48 * 3600

THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}\Z")
SHADOW_NAME = re.compile(r"^[$a-zA-Z0-9:_-]{1,64}\Z")

# Error messages, as AWS words them.
INVALID_JSON = "Invalid JSON"
MISSING_STATE = "Missing required node: state"
STATE_NOT_OBJECT = "State node must be an object"
DESIRED_NOT_OBJECT = "Desired node must be an object"
REPORTED_NOT_OBJECT = "Reported node must be an object"
INVALID_VERSION = "Invalid version"
INVALID_CLIENT_TOKEN = "Invalid clientToken"
TOO_DEEP = f"JSON contains too many levels of nesting; maximum is {MAX_DEPTH}"
INVALID_NODE = "State contains an invalid node"
VERSION_CONFLICT = "Version conflict"
TOO_LARGE = "The payload exceeds the maximum size allowed"
NOT_UTF8 = "Unsupported documented encoding; supported encoding is UTF-8"


def too_many_named(limit: int) -> str:
    return f"Maximum number of named shadows for this thing reached ({limit})"


@dataclass(frozen=True)
class ShadowKey:
    """Which shadow: a thing and a shadow name ('' for the classic, unnamed shadow)."""

    thing: str
    name: str = ""

    @property
    def label(self) -> str:
        """The name AWS uses in 404 messages: the shadow name, or the thing's for classic."""
        return self.name or self.thing

    def __str__(self) -> str:
        return f"{self.thing}/{self.name}" if self.name else self.thing


@dataclass(frozen=True)
class ShadowRecord:
    """What is stored for one shadow.

    ``state``/``metadata`` hold the sections that exist (``desired``, ``reported``).
    A deleted shadow is a tombstone (``deleted_at`` set, state empty) that remembers its
    version for 48 hours.
    """

    state: Mapping[str, JsonObject] = field(default_factory=dict)
    metadata: Mapping[str, JsonObject] = field(default_factory=dict)
    version: int = 0
    timestamp: int = 0
    deleted_at: int | None = None

    @property
    def exists(self) -> bool:
        return self.deleted_at is None and self.version > 0

    def to_json(self) -> JsonObject:
        return {"state": dict(self.state), "metadata": dict(self.metadata), "version": self.version,
                "timestamp": self.timestamp, "deleted_at": self.deleted_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShadowRecord:
        return cls(state=dict(data.get("state") or {}), metadata=dict(data.get("metadata") or {}),
                   version=int(data.get("version", 0)), timestamp=int(data.get("timestamp", 0)),
                   deleted_at=data.get("deleted_at"))

    def document(self) -> JsonObject:
        """``{"state": {desired, reported}, "metadata": {...}, "version": N}`` (for /documents)."""
        return {"state": {s: self.state[s] for s in SECTIONS if s in self.state},
                "metadata": {s: self.metadata[s] for s in SECTIONS if s in self.metadata},
                "version": self.version}

    def delta(self) -> tuple[JsonObject, JsonObject]:
        """(delta state, desired-side metadata of those keys)."""
        desired = self.state.get("desired")
        if not desired:
            return {}, {}
        delta = shadow_delta(desired, self.state.get("reported") or {})
        return delta, _project_metadata(delta, self.metadata.get("desired") or {})


@dataclass(frozen=True)
class Response:
    """One document to publish, on ``<shadow prefix>/<suffix>`` (e.g. ``update/accepted``)."""

    suffix: str
    document: JsonObject

    @property
    def payload(self) -> bytes:
        return json.dumps(self.document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @property
    def accepted(self) -> bool:
        return not self.suffix.endswith("/rejected")


@dataclass(frozen=True)
class Outcome:
    """The result of one request: the record to store (None: nothing changed) and replies."""

    record: ShadowRecord | None
    responses: tuple[Response, ...]

    @property
    def changed(self) -> bool:
        return self.record is not None

    @property
    def rejected(self) -> Response | None:
        return next((r for r in self.responses if not r.accepted), None)


class Rejection(Exception):
    """A request refused with an AWS error code and message (becomes ``…/rejected``)."""

    def __init__(self, code: int, message: str, client_token: str | None = None) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.client_token = client_token


# -- JSON helpers -------------------------------------------------------------------------


def json_equal(a: Json, b: Json) -> bool:
    """JSON value equality: 1 == 1.0, but booleans are never numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def depth(value: Json) -> int:
    """Levels of nesting: a scalar is 0, ``{"a": 1}`` is 1, ``{"a": {"b": 1}}`` is 2.

    Iterative, so a hostile document as deep as the parser allows cannot exhaust the stack.
    """
    deepest = 0
    stack: list[tuple[Json, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def compact_size(value: Json) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def state_size(state: Mapping[str, Json]) -> int:
    """Bytes counted against the 8 KB limit: compact JSON of desired plus reported."""
    return sum(compact_size(state[s]) for s in SECTIONS if s in state)


def shadow_delta(desired: JsonObject, reported: JsonObject) -> JsonObject:
    """The desired leaves that differ from reported, with their path from the root.

    A key missing from reported is in the delta; a key only in reported is not; objects
    are compared leaf by leaf; arrays and scalars as whole values.
    """
    out: JsonObject = {}
    for key, want in desired.items():
        if key not in reported:
            out[key] = want
            continue
        have = reported[key]
        if isinstance(want, dict) and isinstance(have, dict):
            sub = shadow_delta(want, have)
            if sub:
                out[key] = sub
        elif not json_equal(want, have):
            out[key] = want
    return out


def metadata_of(value: Json, now: int) -> Json:
    """The metadata tree mirroring ``value``: each leaf becomes ``{"timestamp": now}``."""
    if isinstance(value, dict):
        return {k: metadata_of(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [metadata_of(v, now) for v in value]
    return {"timestamp": now}


def _project_metadata(delta: JsonObject, metadata: Json) -> JsonObject:
    """The part of ``metadata`` that mirrors the keys of ``delta``."""
    out: JsonObject = {}
    for key, value in delta.items():
        meta = metadata.get(key) if isinstance(metadata, dict) else None
        if isinstance(value, dict) and isinstance(meta, dict):
            # A dict in the delta is a desired object, whose metadata mirrors it key by key.
            out[key] = _project_metadata(value, meta)
        elif meta is not None:
            out[key] = meta
    return out


def merge(state: JsonObject, metadata: JsonObject, patch: JsonObject, now: int) -> tuple[JsonObject, JsonObject]:
    """Apply ``patch`` to one section: objects merge, scalars and arrays replace, null removes."""
    new_state = dict(state)
    new_meta = dict(metadata)
    for key, value in patch.items():
        if value is None:
            new_state.pop(key, None)
            new_meta.pop(key, None)
        elif isinstance(value, dict):
            old = new_state.get(key)
            old_meta = new_meta.get(key)
            if isinstance(old, dict):
                new_state[key], new_meta[key] = merge(old, old_meta if isinstance(old_meta, dict) else {},
                                                      value, now)
            else:
                new_state[key], new_meta[key] = merge({}, {}, value, now)
        else:
            new_state[key] = value
            new_meta[key] = metadata_of(value, now)
    return new_state, new_meta


def _contains_null_in_array(value: Json, in_array: bool = False) -> bool:
    if value is None:
        return in_array
    if isinstance(value, dict):
        return any(_contains_null_in_array(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_null_in_array(v, True) for v in value)
    return False


def _finite(value: Json) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


# -- requests -----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_json(payload: bytes) -> Json:
    """Decode a request payload; 415 when it is not UTF-8, 400 when it is not JSON."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(415, NOT_UTF8) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise Rejection(400, INVALID_JSON) from None
    except RecursionError:
        # Nesting beyond what the parser can follow is far beyond MAX_DEPTH.
        raise Rejection(400, TOO_DEEP) from None


def _client_token(doc: Json) -> str | None:
    if not isinstance(doc, dict) or "clientToken" not in doc:
        return None
    token = doc["clientToken"]
    if not isinstance(token, str) or len(token.encode("utf-8")) > MAX_CLIENT_TOKEN_BYTES:
        raise Rejection(400, INVALID_CLIENT_TOKEN)
    return token


def _with_token(doc: JsonObject, token: str | None) -> JsonObject:
    if token is not None:
        doc["clientToken"] = token
    return doc


def _error(op: Operation, rejection: Rejection, now: int) -> Response:
    doc: JsonObject = {"code": rejection.code, "message": rejection.message, "timestamp": now}
    return Response(f"{op}/rejected", _with_token(doc, rejection.client_token))


def _optional_token(payload: bytes) -> str | None:
    """The clientToken of a get/delete payload; the rest of the body is ignored."""
    if not payload.strip():
        return None
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return _client_token(doc)


def _not_found(key: ShadowKey) -> Rejection:
    return Rejection(404, f"No shadow exists with name: '{key.label}'")


def validate_key(key: ShadowKey) -> None:
    if not THING_NAME.match(key.thing):
        raise Rejection(400, f"Invalid thing name: '{key.thing}'")
    if key.name and not SHADOW_NAME.match(key.name):
        raise Rejection(400, f"Invalid shadow name: '{key.name}'")


def _existing(key: ShadowKey, record: ShadowRecord | None, payload: bytes) -> tuple[ShadowRecord, str | None]:
    """The existing shadow a get or delete names, and the request's clientToken; otherwise a
    Rejection carrying the token (so the error echoes it)."""
    token = None
    try:
        validate_key(key)
        token = _optional_token(payload)
        if record is None or not record.exists:
            raise _not_found(key)
    except Rejection as rejection:
        rejection.client_token = rejection.client_token or token
        raise
    return record, token


def get(key: ShadowKey, record: ShadowRecord | None, payload: bytes, now: int) -> Outcome:
    try:
        record, token = _existing(key, record, payload)
    except Rejection as rejection:
        return Outcome(None, (_error("get", rejection, now),))
    state: JsonObject = {s: record.state[s] for s in SECTIONS if s in record.state}
    delta, _ = record.delta()
    if delta:
        state["delta"] = delta
    doc: JsonObject = {"state": state,
                       "metadata": {s: record.metadata[s] for s in SECTIONS if s in record.metadata},
                       "version": record.version, "timestamp": now}
    return Outcome(None, (Response("get/accepted", _with_token(doc, token)),))


def delete(key: ShadowKey, record: ShadowRecord | None, payload: bytes, now: int) -> Outcome:
    try:
        record, token = _existing(key, record, payload)
    except Rejection as rejection:
        return Outcome(None, (_error("delete", rejection, now),))
    tombstone = ShadowRecord(version=record.version, timestamp=now, deleted_at=now)
    doc = _with_token({"version": record.version, "timestamp": now}, token)
    return Outcome(tombstone, (Response("delete/accepted", doc),))


def _validate_update(payload: bytes) -> tuple[JsonObject, str | None, int | None]:
    """(requested state sections, clientToken, expected version) or a Rejection."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise Rejection(413, TOO_LARGE)
    doc = parse_json(payload)
    if not isinstance(doc, dict):
        raise Rejection(400, INVALID_JSON)
    token = _client_token(doc)
    try:
        if "state" not in doc:
            raise Rejection(400, MISSING_STATE)
        state = doc["state"]
        if state is None:
            # The whole state set to null clears both sections; the shadow stays.
            state = {"desired": None, "reported": None}
        if not isinstance(state, dict):
            raise Rejection(400, STATE_NOT_OBJECT)
        if any(k not in SECTIONS for k in state):
            raise Rejection(400, INVALID_NODE)
        for section, message in (("desired", DESIRED_NOT_OBJECT), ("reported", REPORTED_NOT_OBJECT)):
            if section in state and state[section] is not None and not isinstance(state[section], dict):
                raise Rejection(400, message)
        version = doc.get("version")
        if "version" in doc and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise Rejection(400, INVALID_VERSION)
        for section in SECTIONS:
            value = state.get(section)
            if value is None:
                continue
            if depth(value) > MAX_DEPTH:
                raise Rejection(400, TOO_DEEP)
            if _contains_null_in_array(value) or not _finite(value):
                raise Rejection(400, INVALID_NODE)
    except Rejection as rejection:
        rejection.client_token = token
        raise
    return state, token, version


def update(key: ShadowKey, record: ShadowRecord | None, payload: bytes, now: int, *,
           named_limit: int | None = None) -> Outcome:
    """``named_limit``: set when creating this (named) shadow would exceed the thing's
    named-shadow cap; the update is then refused with 400."""
    token: str | None = None
    try:
        validate_key(key)
        requested, token, expected = _validate_update(payload)
        existed = record is not None and record.exists
        if not existed and key.name and named_limit is not None:
            raise Rejection(400, too_many_named(named_limit), token)
        current = record if record is not None else ShadowRecord()
        if not existed:
            remembered = (current.deleted_at is not None
                          and now - current.deleted_at < DELETED_VERSION_MEMORY_S)
            current = ShadowRecord(version=current.version if remembered else 0)
        if expected is not None and expected != current.version:
            raise Rejection(409, VERSION_CONFLICT, token)
        state = dict(current.state)
        metadata = dict(current.metadata)
        for section in SECTIONS:
            if section not in requested:
                continue
            patch = requested[section]
            if patch is None:
                state.pop(section, None)
                metadata.pop(section, None)
                continue
            state[section], metadata[section] = merge(state.get(section, {}), metadata.get(section, {}),
                                                      patch, now)
        if state_size(state) > MAX_STATE_BYTES:
            raise Rejection(413, TOO_LARGE, token)
    except Rejection as rejection:
        rejection.client_token = rejection.client_token or token
        return Outcome(None, (_error("update", rejection, now),))

    new = replace(current, state=state, metadata=metadata, version=current.version + 1, timestamp=now,
                  deleted_at=None)
    accepted: JsonObject = {
        "state": dict(requested),
        "metadata": {s: metadata_of(v, now) for s, v in requested.items()},
        "version": new.version, "timestamp": now,
    }
    responses = [Response("update/accepted", _with_token(accepted, token))]
    delta, delta_meta = new.delta()
    if delta and requested.get("desired") is not None:
        responses.append(Response("update/delta", _with_token(
            {"state": delta, "metadata": delta_meta, "version": new.version, "timestamp": now}, token)))
    documents = {"previous": current.document() if existed else None, "current": new.document(),
                 "timestamp": now}
    responses.append(Response("update/documents", _with_token(documents, token)))
    return Outcome(new, tuple(responses))


def handle(key: ShadowKey, operation: Operation, record: ShadowRecord | None, payload: bytes,
           now: int, *, named_limit: int | None = None) -> Outcome:
    """Dispatch one request to get / update / delete (``named_limit``: see ``update``)."""
    if operation == "get":
        return get(key, record, payload, now)
    if operation == "update":
        return update(key, record, payload, now, named_limit=named_limit)
    if operation == "delete":
        return delete(key, record, payload, now)
    raise ValueError(f"unknown shadow operation {operation!r}")
