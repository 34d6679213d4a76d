"""The Simulator's sessions: one link per vehicle (``ecokit.sim.links``: the fast path or paho) on
one asyncio loop (persistent session, last will, reconnects with backoff), sending in order (live,
or through the offline queue while disconnected), and the end of a run (drain, goodbye on the
status topic, close)."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid

from ecokit.mqtt.loop import backoff_delay
from ecokit.mqtt.packets import Will
from ecokit.mqtt.publisher import ConnectRefused
from ecokit.sim.base import FLUSH_WINDOW, SimulatorBase, VehicleSession, _now_ms
from ecokit.sim.fleet import BROADCAST_COMMANDS, commands_topic, status_payload, status_topic
from ecokit.sim.shadow import VehicleShadow


class SessionMixin(SimulatorBase):
    """Connections, sending and closing; the links' events (``ecokit.sim.links.LinkEvents``)."""

    def _build_devices(self) -> None:
        s = self.settings
        run = uuid.uuid4().hex[:8]  # client tokens: unique per run and vehicle, short (5,000 of them)
        for index, vehicle in enumerate(self.fleet):
            auth = self.auth(vehicle.id)
            dev = VehicleSession(index, vehicle, auth)
            dev.link = self._links.link(dev, s.client_id_prefix + vehicle.id, auth)
            if s.shadow:
                dev.shadow = VehicleShadow(vehicle, self._shadow_interval, token_prefix=f"{run}-{index:x}")
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
        s, vid, url = self.settings, dev.vehicle.id, self.target.url
        dev.reconnecting = True
        ok = False
        try:
            async with self._slots:
                if self._phase == "closing":
                    return
                will = Will(status_topic(vid), status_payload(vid, "offline", _now_ms()), qos=1, retain=True)
                timeout = max(10.0, float(s.keepalive))
                try:
                    session_present = await dev.link.connect(will, timeout)
                except ConnectRefused as exc:
                    self.stats.error(f"{vid}: {exc}")
                    return
                except TimeoutError:
                    self.stats.connect_failures += 1
                    self.stats.error(f"{vid}: no CONNACK from {url} within {timeout:g}s")
                    return
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    self.stats.connect_failures += 1
                    if isinstance(exc, ssl.SSLError | ValueError):
                        self.stats.error(f"{vid}: cannot connect to {url}: {exc}")
                    else:
                        self.stats.last_errors.append(f"{vid}: {url}: {exc}")
                    return
                ok = True
                self._connected(dev, session_present)
        finally:
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

    def _connected(self, dev: VehicleSession, session_present: bool) -> None:
        """The CONNACK accepted the vehicle (the link already re-sent what was unacknowledged)."""
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
        if first or not session_present:
            # Once per run even with a session present: an earlier run may have had other
            # subscriptions (shadows off). One SUBSCRIBE for commands and shadow answers.
            topics = [(commands_topic(vid), 1), (BROADCAST_COMMANDS, 1)]
            if shadow is not None:
                topics += [(t, 1) for t in shadow.subscriptions()]
            dev.link.subscribe(topics)
        if shadow is not None:
            # After the SUBSCRIBE on the same connection: the answers find the subscriptions.
            for message in shadow.connected():
                self._publish(dev, message.topic, message.payload, message.qos)
            self.stats.shadow_reports += 1
        if self.queue is not None and self.queue.depth(vid):
            # What the link had unacknowledged went first; the queue goes after it, so order is kept.
            dev.flushing = True
            self._spawn(self._flush(dev))

    # -- what the links report (ecokit.sim.links.LinkEvents) -----------------------------------

    def link_lost(self, dev: VehicleSession, why: str) -> None:
        if dev.online:
            dev.online = False
            self.stats.connected -= 1
            if self._phase != "closing":
                self.stats.disconnects += 1
        dev.flushing = False  # the link re-sends what was unacknowledged after the next CONNACK
        if self._phase != "closing" and not dev.reconnecting:
            self._retry(dev)

    def link_problem(self, dev: VehicleSession, detail: str) -> None:
        self.stats.error(f"{dev.vehicle.id}: {detail}")

    def _publish(self, dev: VehicleSession, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Hand a message to the link; False if it could not take it (the connection just went).
        A QoS 1 message the link could not write yet stays with it and is re-sent after a reconnect."""
        if dev.link.publish(topic, payload, qos, retain):
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
        await asyncio.sleep(0)  # the link re-sent its unacknowledged messages first
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
        self._connected_at_end = self.stats.connected
        ts = _now_ms()
        online = [d for d in self._devices if d.online]
        for dev in online:
            self._publish(dev, status_topic(dev.vehicle.id), status_payload(dev.vehicle.id, "offline", ts), 1,
                          True)
        deadline = time.monotonic() + 5.0
        while any(d.inflight > 0 for d in online if d.online) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for dev in self._devices:
            if dev.online:
                dev.online = False
                self.stats.connected -= 1
            dev.link.end()
        deadline = time.monotonic() + 3.0
        while any(d.link.open for d in self._devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
