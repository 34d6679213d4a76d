"""The device side of a shadow: report state, receive desired changes, report them back.

``DeviceShadow`` does no I/O: it tells the device what to subscribe to and returns the
messages to publish, so any MQTT client (paho threads, asyncio) can drive it::

    shadow = DeviceShadow("vehicle-0001")
    shadow.on("publish_interval", lambda value: vehicle.set_interval(value))  # returns the applied value

    # after every (re)connect:
    for topic in shadow.subscriptions():
        client.subscribe(topic, qos=1)
    client.publish(*shadow.report({"engine": True, "publish_interval": 5, "firmware": "1.4.2"}))
    client.publish(*shadow.sync())          # learn desired changes made while offline

    # for every incoming message:
    if shadow.wants(topic):
        for message in shadow.handle(topic, payload):
            client.publish(*message)

A delta (or the delta part of a ``get`` answer) calls the handler registered for each
key; the handler applies the value and returns what the device now runs with (it may
clamp it), and the helper reports that value. Returning ``IGNORE`` (or having no handler)
leaves the key unreported. A value already reported is not reported again, so a device
that clamps a desired value does not loop. Deltas older than the last version seen are
dropped (messages may arrive out of order).

``PahoDeviceShadow`` binds it to a connected paho client in one call.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ecokit.shadow import topics
from ecokit.shadow.machine import json_equal

log = logging.getLogger("ecokit.shadow.device")


class _Ignore:
    def __repr__(self) -> str:
        return "IGNORE"


IGNORE: Any = _Ignore()
"""Return this from a handler to leave the desired key unapplied and unreported."""

Handler = Callable[[Any], Any]


class Message(NamedTuple):
    """A message for the device to publish: ``client.publish(*message)``."""

    topic: str
    payload: bytes
    qos: int = 1


@dataclass
class Rejection:
    """The last request the shadow service refused."""

    code: int
    message: str
    client_token: str | None


class DeviceShadow:
    """One device's view of its shadow (classic, or named with ``name``)."""

    def __init__(self, thing: str, name: str = "", *, handlers: Mapping[str, Handler] | None = None,
                 on_delta: Callable[[dict[str, Any]], Mapping[str, Any] | None] | None = None,
                 token_prefix: str | None = None) -> None:
        self.thing = thing
        self.name = name
        self.prefix = topics.prefix(thing, name)
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.on_delta = on_delta
        self.reported: dict[str, Any] = {}
        self.desired: dict[str, Any] = {}
        self.version = 0
        self.last_rejection: Rejection | None = None
        self.deltas_applied = 0
        self._token_prefix = (token_prefix or uuid.uuid4().hex)[:40]  # tokens stay within 64 bytes
        self._counter = 0

    # -- what the device does -----------------------------------------------------------

    def on(self, key: str, handler: Handler) -> None:
        """Apply ``desired[key]`` with ``handler(value) -> applied value`` (or IGNORE)."""
        self.handlers[key] = handler

    def subscriptions(self) -> list[str]:
        """Topics to subscribe to (QoS 1) before publishing anything."""
        return [f"{self.prefix}/update/delta", f"{self.prefix}/update/accepted",
                f"{self.prefix}/update/rejected", f"{self.prefix}/get/accepted",
                f"{self.prefix}/get/rejected"]

    def wants(self, topic: str) -> bool:
        return topic in self.subscriptions()

    def _token(self) -> str:
        self._counter += 1
        return f"{self._token_prefix}-{self._counter}"

    def report(self, reported: Mapping[str, Any]) -> Message:
        """An update request reporting ``reported`` (only the keys given change)."""
        changes = dict(reported)
        self.reported.update({k: v for k, v in changes.items() if v is not None})
        for key in [k for k, v in changes.items() if v is None]:
            self.reported.pop(key, None)
        doc = {"state": {"reported": changes}, "clientToken": self._token()}
        return Message(f"{self.prefix}/update", json.dumps(doc, separators=(",", ":")).encode())

    def report_changes(self, reported: Mapping[str, Any]) -> Message | None:
        """Like ``report``, but only the keys whose value differs from the last report (None if none)."""
        changes = {k: v for k, v in reported.items()
                   if k not in self.reported or not json_equal(self.reported[k], v)}
        return self.report(changes) if changes else None

    def sync(self) -> Message:
        """A get request: its answer applies any delta that built up while offline."""
        doc = {"clientToken": self._token()}
        return Message(f"{self.prefix}/get", json.dumps(doc).encode())

    # -- what the shadow service sends ---------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Message]:
        """Process one message on a subscribed topic; returns the messages to publish."""
        try:
            doc = json.loads(payload)
        except ValueError:
            log.warning("%s: ignoring a non-JSON message on %s", self.thing, topic)
            return []
        if not isinstance(doc, dict):
            return []
        suffix = topic[len(self.prefix) + 1:] if topic.startswith(self.prefix + "/") else ""
        version = doc.get("version") if isinstance(doc.get("version"), int) else None
        if suffix.endswith("/rejected"):
            self.last_rejection = Rejection(int(doc.get("code", 0)), str(doc.get("message", "")),
                                            doc.get("clientToken"))
            if suffix == "get/rejected" and self.last_rejection.code == 404:
                return []  # no shadow yet: the first report creates it
            log.warning("%s: shadow %s refused: %s %s", self.thing, suffix, self.last_rejection.code,
                        self.last_rejection.message)
            return []
        if suffix == "update/accepted":
            if version is not None:
                self.version = max(self.version, version)
            desired = (doc.get("state") or {}).get("desired")
            if isinstance(desired, dict):
                self._merge_desired(desired)
            return []
        if suffix == "update/delta":
            if version is not None and version < self.version:
                return []  # older than what we hold
            if version is not None:
                self.version = version
            delta = doc.get("state")
            return self._apply(delta if isinstance(delta, dict) else {})
        if suffix == "get/accepted":
            if version is not None and version < self.version:
                return []
            if version is not None:
                self.version = version
            state = doc.get("state") or {}
            desired = state.get("desired")
            self.desired = dict(desired) if isinstance(desired, dict) else {}
            delta = state.get("delta")
            return self._apply(delta if isinstance(delta, dict) else {})
        return []

    def _merge_desired(self, desired: Mapping[str, Any]) -> None:
        for key, value in desired.items():
            if value is None:
                self.desired.pop(key, None)
            else:
                self.desired[key] = value

    def _apply(self, delta: Mapping[str, Any]) -> list[Message]:
        if not delta:
            return []
        self._merge_desired(delta)
        applied: dict[str, Any] = {}
        for key, value in delta.items():
            handler = self.handlers.get(key)
            if handler is None:
                continue
            try:
                result = handler(value)
            except Exception:
                log.exception("%s: applying desired %s failed", self.thing, key)
                continue
            if result is not IGNORE:
                applied[key] = result
        if self.on_delta is not None:
            extra = self.on_delta(dict(delta))
            if extra:
                applied.update(extra)
        if applied:
            self.deltas_applied += 1
        message = self.report_changes(applied)
        return [message] if message is not None else []


class PahoDeviceShadow:
    """``DeviceShadow`` bound to a paho client: subscribes on connect, answers deltas.

    Call ``attach()`` before ``connect()``; it chains the client's existing on_connect and
    on_message callbacks (messages on other topics still reach them).
    """

    def __init__(self, client: Any, shadow: DeviceShadow,
                 initial_report: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.client = client
        self.shadow = shadow
        self.initial_report = initial_report

    def attach(self) -> PahoDeviceShadow:
        previous_connect = self.client.on_connect
        previous_message = self.client.on_message

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            if previous_connect is not None:
                previous_connect(client, userdata, flags, reason, props)
            if getattr(reason, "is_failure", False) or (isinstance(reason, int) and reason != 0):
                return  # refused (paho v2 ReasonCode, or a v1 integer return code)
            for topic in self.shadow.subscriptions():
                client.subscribe(topic, qos=1)
            if self.initial_report is not None:
                client.publish(*self.shadow.report(self.initial_report()))
            client.publish(*self.shadow.sync())

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            if self.shadow.wants(msg.topic):
                for message in self.shadow.handle(msg.topic, bytes(msg.payload)):
                    client.publish(*message)
            elif previous_message is not None:
                previous_message(client, userdata, msg)

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        return self

    def report(self, reported: Mapping[str, Any]) -> None:
        """Report the keys that changed since the last report (nothing when none did)."""
        message = self.shadow.report_changes(reported)
        if message is not None:
            self.client.publish(*message)
