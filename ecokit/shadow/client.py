"""An application-side shadow client: get / update / delete and wait for the answer.

Each request carries a fresh ``clientToken``; the reply (``…/accepted`` or ``…/rejected``)
with that token is returned. Every wait has a deadline. ``ecokit shadow`` uses it as
``ecokit-admin``; applications and tests can use it with any credentials the ACL allows.
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ecokit.errors import BrokerError, UsageError
from ecokit.mqtt.loop import close_socket
from ecokit.shadow import topics
from ecokit.shadow.machine import SHADOW_NAME, THING_NAME, Operation


@dataclass(frozen=True)
class ShadowReply:
    """The service's answer to one request."""

    topic: str
    document: dict[str, Any]

    @property
    def accepted(self) -> bool:
        return self.topic.endswith("/accepted")

    @property
    def code(self) -> int | None:
        code = self.document.get("code")
        return int(code) if isinstance(code, int) else None

    @property
    def version(self) -> int | None:
        version = self.document.get("version")
        return int(version) if isinstance(version, int) else None


def check_names(thing: str, name: str = "") -> None:
    """Refuse, before anything is sent, a thing or shadow name the service would never see as a
    request (``veh/1`` makes a topic of other levels: the request would wait for nothing)."""
    if not THING_NAME.match(thing):
        raise UsageError(f"{thing!r} is not a thing name: 1-128 letters, digits, ':', '_' or '-'",
                         hint="a thing is a device id (`ecokit devices list`)")
    if name and not SHADOW_NAME.match(name):
        raise UsageError(f"{name!r} is not a shadow name: 1-64 letters, digits, '$', ':', '_' or '-'")


class ShadowTimeout(BrokerError):
    """The shadow service did not answer in time."""


class ShadowClient:
    """A connected MQTT client that speaks the shadow request/response protocol."""

    def __init__(self, host: str, port: int, *, username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, client_id: str | None = None) -> None:
        self.host, self.port = host, port
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"ecokit-shadow-cli-{uuid.uuid4().hex[:10]}",
                                   protocol=mqtt.MQTTv5)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._acks: dict[int, queue.Queue[Any]] = {}
        self._replies: dict[str, queue.Queue[ShadowReply]] = {}
        self._subscribed: set[str] = set()
        self._lock = threading.Lock()
        from ecokit.shadow.service import no_delay

        self._client.on_socket_open = no_delay
        self._client.on_connect = lambda c, u, f, rc, p: self._connack.put(rc)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self._ack(mid).put(rcs)
        self._client.on_message = self._on_message

    def _ack(self, mid: int) -> queue.Queue[Any]:
        with self._lock:
            return self._acks.setdefault(mid, queue.Queue())

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        token = doc.get("clientToken") if isinstance(doc, dict) else None
        if isinstance(token, str):
            with self._lock:
                waiting = self._replies.get(token)
            if waiting is not None:
                waiting.put(ShadowReply(msg.topic, doc))

    def connect(self, timeout: float = 5.0) -> ShadowClient:
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise BrokerError(f"cannot reach the broker at {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        try:
            reason = self._connack.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise ShadowTimeout(f"no CONNACK from {self.host}:{self.port} within {timeout}s") from None
        if reason.is_failure:
            self.close()
            raise BrokerError(f"the broker at {self.host}:{self.port} refused the connection: {reason}")
        return self

    def _subscribe(self, thing: str, name: str, operation: Operation, timeout: float) -> None:
        base = topics.prefix(thing, name)
        wanted = [f"{base}/{operation}/{r}" for r in ("accepted", "rejected")]
        missing = [t for t in wanted if t not in self._subscribed]
        if not missing:
            return
        result, mid = self._client.subscribe([(t, 1) for t in missing])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerError(f"cannot subscribe to {missing[0]}: {mqtt.error_string(result)}")
        try:
            reasons = self._ack(mid).get(timeout=timeout)
        except queue.Empty:
            raise ShadowTimeout(f"no SUBACK for {missing[0]} within {timeout}s") from None
        refused = [t for t, r in zip(missing, reasons, strict=False) if r.is_failure]
        if refused:
            raise BrokerError(f"the broker refused the subscription to {refused[0]}")
        self._subscribed.update(missing)

    def request(self, operation: Operation, thing: str, body: Mapping[str, Any] | None = None, *,
                name: str = "", timeout: float = 5.0) -> ShadowReply:
        """Send one request and wait for its accepted/rejected reply."""
        check_names(thing, name)
        self._subscribe(thing, name, operation, timeout)
        token = uuid.uuid4().hex
        doc = {**(body or {}), "clientToken": token}
        waiting: queue.Queue[ShadowReply] = queue.Queue()
        with self._lock:
            self._replies[token] = waiting
        try:
            topic = f"{topics.prefix(thing, name)}/{operation}"
            info = self._client.publish(topic, json.dumps(doc), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}")
            try:
                return waiting.get(timeout=timeout)
            except queue.Empty:
                raise ShadowTimeout(
                    f"no answer on {topic}/accepted or /rejected within {timeout}s",
                    hint="is the shadow service running? (`ecokit status`)") from None
        finally:
            with self._lock:
                self._replies.pop(token, None)

    def get(self, thing: str, *, name: str = "", timeout: float = 5.0) -> ShadowReply:
        return self.request("get", thing, name=name, timeout=timeout)

    def update(self, thing: str, *, desired: Mapping[str, Any] | None = None,
               reported: Mapping[str, Any] | None = None, version: int | None = None, name: str = "",
               clear_desired: bool = False, clear_reported: bool = False, timeout: float = 5.0) -> ShadowReply:
        state: dict[str, Any] = {}
        if desired is not None or clear_desired:
            state["desired"] = None if clear_desired else dict(desired or {})
        if reported is not None or clear_reported:
            state["reported"] = None if clear_reported else dict(reported or {})
        body: dict[str, Any] = {"state": state}
        if version is not None:
            body["version"] = version
        return self.request("update", thing, body, name=name, timeout=timeout)

    def delete(self, thing: str, *, name: str = "", timeout: float = 5.0) -> ShadowReply:
        return self.request("delete", thing, name=name, timeout=timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        close_socket(self._client)

    def __enter__(self) -> ShadowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
