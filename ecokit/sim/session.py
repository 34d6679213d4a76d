"""The Simulator's sessions: one paho client per vehicle on one asyncio loop (persistent
session, last will, reconnects with backoff), sending in order (live, or through the offline
queue while disconnected), and the end of a run (drain, goodbye on the status topic, close)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from ecokit.mqtt.loop import backoff_delay, new_paho_client, persistent_connect_args
from ecokit.mqtt.target import ClientAuth
from ecokit.sim.base import FLUSH_WINDOW, SimulatorBase, VehicleSession, _now_ms
from ecokit.sim.fleet import BROADCAST_COMMANDS, commands_topic, status_payload, status_topic
from ecokit.sim.shadow import VehicleShadow


class SessionMixin(SimulatorBase):
    """Connections, paho callbacks, sending and closing."""

    def _tls_context(self, auth: ClientAuth) -> ssl.SSLContext:
        if auth.client_cert is None:
            if self._tls_shared is None:
                self._tls_shared = self.target.tls_context()
            return self._tls_shared
        return self.target.tls_context(auth.client_cert)

    def _build_devices(self) -> None:
        s = self.settings
        run = uuid.uuid4().hex[:8]  # client tokens: unique per run and vehicle, short (5,000 of them)
        for index, vehicle in enumerate(self.fleet):
            auth = self.auth(vehicle.id)
            client = new_paho_client(s.client_id_prefix + vehicle.id, protocol=s.protocol, clean_start=False,
                                     websocket_path=self.target.websocket_path)
            client.user_data_set(None)
            if auth.username is not None:
                client.username_pw_set(auth.username, auth.password)
            if self.target.tls:
                client.tls_set_context(self._tls_context(auth))
            dev = VehicleSession(index, vehicle, client, auth)
            if s.shadow:
                dev.shadow = VehicleShadow(vehicle, self._shadow_interval, token_prefix=f"{run}-{index:x}")
            client.user_data_set(dev)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_publish = self._on_publish
            client.on_subscribe = self._on_subscribe
            self._driver.attach(client)
            self._devices.append(dev)
            self._by_id[vehicle.id] = dev
            self._generation.append(0)

    async def _connect_all(self) -> None:
        for dev in self._devices:
            self._spawn(self._connect(dev))
        # Publishing starts once every vehicle has connected or failed once (it then keeps
        # retrying and queues offline), or after connect_timeout.
        deadline = time.monotonic() + self.settings.connect_timeout
        while time.monotonic() < deadline and not self._stopping:
            if all(d.ever or d.attempt > 0 for d in self._devices):
                break
            await asyncio.sleep(0.05)
        if self.settings.shadow:
            await self._sync_shadows()

    async def _connect(self, dev: VehicleSession) -> None:
        s, client = self.settings, dev.client
        dev.reconnecting = True
        ok = False
        try:
            async with self._slots:
                if self._phase == "closing":
                    return
                client.will_set(status_topic(dev.vehicle.id), status_payload(dev.vehicle.id, "offline", _now_ms()),
                                qos=1, retain=True)
                fut = dev.connack = self._loop.create_future()
                try:
                    if not dev.started:
                        dev.started = True
                        await self._driver.connect(client, self.target.host, self.target.port,
                                                   **persistent_connect_args(s.protocol, s.keepalive,
                                                                             s.session_expiry))
                    else:
                        await self._driver.reconnect(client)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self.stats.connect_failures += 1
                    if isinstance(exc, ssl.SSLError | ValueError):
                        self.stats.error(f"{dev.vehicle.id}: cannot connect to {self.target.url}: {exc}")
                    else:
                        self.stats.last_errors.append(f"{dev.vehicle.id}: {self.target.url}: {exc}")
                    return
                try:
                    ok = await asyncio.wait_for(asyncio.shield(fut), timeout=max(10.0, float(s.keepalive)))
                except TimeoutError:
                    self.stats.connect_failures += 1
                    self.stats.error(f"{dev.vehicle.id}: no CONNACK from {self.target.url}")
                    with contextlib.suppress(Exception):
                        client.disconnect()
        finally:
            dev.connack = None
            dev.reconnecting = False
            if not (ok and dev.online):
                self._retry(dev)

    def _retry(self, dev: VehicleSession) -> None:
        """Schedule the next connection attempt: exponential backoff with jitter."""
        if self._phase == "closing":
            return
        s = self.settings
        delay = backoff_delay(dev.attempt, s.backoff_min, s.backoff_max, self._jitter)
        dev.attempt += 1
        dev.reconnecting = True
        self._loop.call_later(delay, self._start_reconnect, dev)

    def _start_reconnect(self, dev: VehicleSession) -> None:
        if dev.online or self._phase == "closing":
            dev.reconnecting = False
            return
        self._spawn(self._connect(dev))

    def _on_connect(self, client: mqtt.Client, dev: VehicleSession, flags: Any, reason: Any, props: Any) -> None:
        fut = dev.connack
        if reason.is_failure:
            self.stats.error(f"{dev.vehicle.id}: {self.target.url} refused the connection: {reason}")
            if fut is not None and not fut.done():
                fut.set_result(False)
            return
        vid = dev.vehicle.id
        first = not dev.ever
        if dev.ever:
            self.stats.reconnects += 1
        else:
            self.stats.ever_connected += 1
        dev.ever, dev.online, dev.attempt = True, True, 0
        self.stats.connected += 1
        self._publish(dev, status_topic(vid), status_payload(vid, "online", _now_ms()), 1, True)
        shadow = dev.shadow
        if first or not flags.session_present:
            # Once per run even with a session present: an earlier run may have had other
            # subscriptions (shadows off). One SUBSCRIBE for commands and shadow answers.
            topics = [(commands_topic(vid), 1), (BROADCAST_COMMANDS, 1)]
            if shadow is not None:
                topics += [(t, 1) for t in shadow.subscriptions()]
            client.subscribe(topics)
        if shadow is not None:
            # After the SUBSCRIBE on the same connection: the answers find the subscriptions.
            for message in shadow.connected():
                self._publish(dev, message.topic, message.payload, message.qos)
            self.stats.shadow_reports += 1
        if self.queue is not None and self.queue.depth(vid):
            # paho re-sends its in-flight messages right after this callback returns;
            # the queue goes after them, so order is kept.
            dev.flushing = True
            self._spawn(self._flush(dev))
        if fut is not None and not fut.done():
            fut.set_result(True)

    def _on_disconnect(self, client: mqtt.Client, dev: VehicleSession, flags: Any, reason: Any, props: Any) -> None:
        if dev.online:
            dev.online = False
            self.stats.connected -= 1
            if self._phase != "closing":
                self.stats.disconnects += 1
        dev.flushing = False  # paho re-sends what was in flight after the next CONNACK
        fut = dev.connack
        if fut is not None and not fut.done():
            fut.set_result(False)
        if self._phase != "closing" and not dev.reconnecting:
            self._retry(dev)

    def _on_publish(self, client: mqtt.Client, dev: VehicleSession, mid: int, reason: Any, props: Any) -> None:
        acks = dev.acks
        if acks is not None and acks.pop(mid, False):
            self.stats.acked += 1

    def _on_subscribe(self, client: mqtt.Client, dev: VehicleSession, mid: int, reasons: Any, props: Any) -> None:
        for rc in reasons:
            if getattr(rc, "is_failure", False):
                self.stats.error(f"{dev.vehicle.id}: subscription to its commands or shadow refused: {rc}")

    def _publish(self, dev: VehicleSession, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Hand a message to paho; False if it could not take it (the connection just went)."""
        info = dev.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
            # A QoS 1 message paho could not write yet stays in its session and is re-sent.
            if qos > 0 and info.mid is not None:
                if dev.acks is None:
                    dev.acks = {}
                dev.acks[info.mid] = True
            self.stats.sent += 1
            return True
        return False

    def _send(self, dev: VehicleSession, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Send now if the vehicle is online and its queue is empty, else queue (in order)."""
        if dev.online and not dev.flushing and self._publish(dev, topic, payload, qos, retain):
            return
        assert self.queue is not None
        vid = dev.vehicle.id
        if not self.queue.put(vid, topic, payload, qos, retain) and self.queue.dropped.get(vid) == 1:
            self.stats.error(f"{vid}: offline queue full ({self.queue.limit}); dropping its oldest messages")

    async def _flush(self, dev: VehicleSession) -> None:
        queue, vid = self.queue, dev.vehicle.id
        assert queue is not None
        await asyncio.sleep(0)  # let paho re-send its own in-flight messages first
        while dev.online and dev.flushing:
            rows = queue.peek(vid, 100)
            if not rows:
                dev.flushing = False
                return
            last = None
            for row in rows:
                while dev.online and dev.inflight >= FLUSH_WINDOW:
                    await asyncio.sleep(0.005)
                if not dev.online or not self._publish(dev, row.topic, row.payload, row.qos, row.retain):
                    break
                last = row.id
                self.stats.flushed += 1
            if last is not None:
                queue.remove_through(vid, last)
            await asyncio.sleep(0)

    def _busy(self) -> bool:
        assert self.queue is not None
        return self.queue.size > 0 or any(d.inflight > 0 for d in self._devices)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout
        while self._busy() and time.monotonic() < deadline and not self._abort:
            await asyncio.sleep(0.02)

    async def _close(self) -> None:
        # Say goodbye on the status topic (a clean DISCONNECT suppresses the will), then go.
        ts = _now_ms()
        online = [d for d in self._devices if d.online]
        for dev in online:
            self._publish(dev, status_topic(dev.vehicle.id), status_payload(dev.vehicle.id, "offline", ts), 1,
                          True)
        deadline = time.monotonic() + 5.0
        while any(d.inflight > 0 for d in online if d.online) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for dev in self._devices:
            with contextlib.suppress(Exception):
                dev.client.disconnect()
        deadline = time.monotonic() + 3.0
        while any(d.online for d in self._devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
