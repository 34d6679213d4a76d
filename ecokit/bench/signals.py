"""Broker-side signals during a run, where the broker offers them.

- ``$SYS/#``: Mosquitto (and most brokers) publish counters and gauges there, retained, every
  ``sys_interval`` seconds (Mosquitto's default: 10). A client of the run subscribes; the first
  and the last fresh value of each numeric topic (the retained one predates the run) give counter
  deltas (messages received/sent, publishes *dropped* by the broker), and every value gauges
  (clients, heap, stored messages).
  A broker or user that may not read ``$SYS`` simply yields nothing.
- The broker process, when it runs on this machine (a local-runtime stack): CPU and resident
  memory from ``/proc/<pid>``, sampled once per tick.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ecokit.mqtt.loop import close_socket
from ecokit.mqtt.target import BrokerTarget, ClientAuth

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")

# $SYS topics (Mosquitto names) worth a line in the result: counters report the change over the run.
COUNTERS = {
    "messages_received": "$SYS/broker/messages/received",
    "messages_sent": "$SYS/broker/messages/sent",
    "publish_received": "$SYS/broker/publish/messages/received",
    "publish_sent": "$SYS/broker/publish/messages/sent",
    "publish_dropped": "$SYS/broker/publish/messages/dropped",
    "bytes_received": "$SYS/broker/bytes/received",
    "bytes_sent": "$SYS/broker/bytes/sent",
}
GAUGES = {
    "clients_connected": "$SYS/broker/clients/connected",
    "messages_stored": "$SYS/broker/store/messages/count",
    "heap_bytes": "$SYS/broker/heap/current",
    "subscriptions": "$SYS/broker/subscriptions/count",
    "load_received_1min": "$SYS/broker/load/messages/received/1min",
    "load_sent_1min": "$SYS/broker/load/messages/sent/1min",
}


@dataclass
class _Series:
    first: float
    first_at: float
    last: float
    last_at: float
    peak: float
    live: bool  # False while the only value is the retained one from before the run


@dataclass
class SysMonitor:
    """Records every numeric ``$SYS`` value a broker publishes while the run lasts."""

    target: BrokerTarget
    auth: ClientAuth
    series: dict[str, _Series] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    note: str = ""
    _client: mqtt.Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 5.0) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ecokit-bench-sys-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5,
                             transport="websockets" if self.target.websocket_path else "tcp")
        if self.target.websocket_path:
            client.ws_set_options(path=self.target.websocket_path)
        if self.auth.username is not None:
            client.username_pw_set(self.auth.username, self.auth.password)
        if self.target.tls:
            client.tls_set_context(self.target.tls_context(self.auth.client_cert))
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        try:
            client.connect(self.target.host, self.target.port, keepalive=30)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.note = f"$SYS not read: cannot connect ({exc})"
            close_socket(client)
            return
        self._client = client
        client.loop_start()
        if not self._subscribed.wait(timeout):
            self.note = self.note or "$SYS not read: no answer from the broker"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.note = f"$SYS not read: connection refused ({reason})"
            self._subscribed.set()
            return
        client.subscribe("$SYS/#", 0)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(getattr(rc, "is_failure", False) for rc in reasons):
            self.note = f"$SYS not read: subscription refused ({reasons[0]})"
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        text = bytes(msg.payload).decode("utf-8", "replace")
        now = time.monotonic()
        match = _NUMBER.match(text)
        with self._lock:
            if match is None:
                self.texts[msg.topic] = text
                return
            value = float(match.group(1))
            found = self.series.get(msg.topic)
            live = not msg.retain
            if found is None:
                self.series[msg.topic] = _Series(value, now, value, now, value, live)
            elif live and not found.live:
                # The retained value was taken before the run; counters start at the first fresh one.
                found.first, found.first_at = value, now
                found.last, found.last_at, found.live = value, now, True
                found.peak = max(found.peak, value)
            else:
                found.last, found.last_at = value, now
                found.peak = max(found.peak, value)

    def value(self, topic: str) -> float | None:
        with self._lock:
            found = self.series.get(topic)
            return found.last if found else None

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()
            close_socket(client)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            series = dict(self.series)
            texts = dict(self.texts)
        if not series:
            return {"available": False, "note": self.note or "the broker published no $SYS values"}
        out: dict[str, Any] = {"available": True}
        spans = [s.last_at - s.first_at for s in series.values() if s.live and s.last_at > s.first_at]
        out["sample_span_s"] = round(max(spans), 1) if spans else 0.0
        if out["sample_span_s"] > 0:
            for name, topic in COUNTERS.items():
                s = series.get(topic)
                if s is not None and s.live:
                    out[name] = s.last - s.first
        for name, topic in GAUGES.items():
            s = series.get(topic)
            if s is not None:
                out[name] = s.last
                out[f"{name}_max"] = s.peak
        version = texts.get("$SYS/broker/version")
        if version:
            out["version"] = version
        if out["sample_span_s"] == 0:
            out["note"] = ("fewer than two $SYS samples during the run, so no counters (the broker publishes $SYS "
                           "every sys_interval, 10 s on Mosquitto: runs of 20 s and more get them)")
        else:
            out["note"] = (f"counters between the first and the last $SYS sample of the run "
                           f"({out['sample_span_s']:g} s apart)")
        return out


class ProcessSampler:
    """CPU and resident memory of one local process (the broker), from /proc."""

    def __init__(self, pid: int, name: str = "broker") -> None:
        self.pid = pid
        self.name = name
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self._last: tuple[float, float] | None = None
        self.cpu: list[float] = []  # percent of one core, per sample interval
        self.rss: list[float] = []  # MB
        self.gone = False

    def _read(self) -> tuple[float, float] | None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            statm = Path(f"/proc/{self.pid}/statm").read_text()
        except OSError:
            self.gone = True
            return None
        fields = stat.rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime
        rss_mb = int(statm.split()[1]) * self.page / 1e6
        return cpu_s, rss_mb

    def sample(self) -> dict[str, float] | None:
        """CPU percent since the previous sample and RSS now (None before the second sample)."""
        now = time.monotonic()
        read = self._read()
        if read is None:
            return None
        cpu_s, rss_mb = read
        self.rss.append(rss_mb)
        previous, self._last = self._last, (now, cpu_s)
        if previous is None or now <= previous[0]:
            return None
        percent = (cpu_s - previous[1]) / (now - previous[0]) * 100
        self.cpu.append(percent)
        return {"cpu_percent": round(percent, 1), "rss_mb": round(rss_mb, 1)}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self.pid, "name": self.name}
        if self.cpu:
            out["cpu_percent_mean"] = round(sum(self.cpu) / len(self.cpu), 1)
            out["cpu_percent_max"] = round(max(self.cpu), 1)
        if self.rss:
            out["rss_mb_start"] = round(self.rss[0], 1)
            out["rss_mb_max"] = round(max(self.rss), 1)
            out["rss_mb_end"] = round(self.rss[-1], 1)
        if self.gone:
            out["note"] = "the process went away during the run"
        return out
