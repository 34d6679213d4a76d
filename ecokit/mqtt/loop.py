"""Many paho-mqtt clients driven by one asyncio event loop.

paho's own network loop (``loop_forever`` / ``loop_start``) is a ``select()`` per client
and a thread per client; that tops out at a few hundred sockets per process. Here the
asyncio loop watches every client's socket instead: paho tells us when a socket opens,
closes or has bytes to write (``on_socket_*`` callbacks), we register ``loop_read`` /
``loop_write`` with ``add_reader`` / ``add_writer``, and one timer calls ``loop_misc``
(keepalive pings, dead-connection detection) for every client once a second.

``connect``/``reconnect`` block on the TCP connect and the TLS handshake, so
:meth:`PahoLoop.connect` runs them on a small thread pool; everything else happens on
the loop's thread. benchmarks/README.md has the comparison that chose this layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MQTTv5 = mqtt.MQTTv5
MQTTv311 = mqtt.MQTTv311


def new_paho_client(client_id: str, *, protocol: int = 5, clean_start: bool = False,
                    max_inflight: int = 100, websocket_path: str | None = None) -> mqtt.Client:
    """A paho client for an asyncio-driven fleet: no internal queue limit, no own loop; MQTT over
    websockets (paho's transport) when ``websocket_path`` is given."""
    proto = MQTTv5 if protocol == 5 else MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto,
                         clean_session=None if proto == MQTTv5 else clean_start,
                         reconnect_on_failure=False, transport="websockets" if websocket_path else "tcp")
    if websocket_path:
        client.ws_set_options(path=websocket_path)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    return client


class PahoLoop:
    """Drives the sockets of any number of paho clients from one asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, misc_interval: float = 1.0,
                 connect_workers: int = 16) -> None:
        self.loop = loop
        self.misc_interval = misc_interval
        self._clients: set[mqtt.Client] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._thread_id = threading.get_ident()
        self._pool = ThreadPoolExecutor(max_workers=connect_workers, thread_name_prefix="ecokit-connect")
        self._fds: dict[mqtt.Client, int] = {}
        self._writing: set[mqtt.Client] = set()  # clients whose socket is watched for writability
        self._dirty: set[mqtt.Client] = set()  # clients with bytes to write at the end of this iteration
        self._flush_pending = False

    # -- registration ------------------------------------------------------------------

    def attach(self, client: mqtt.Client) -> None:
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._clients.add(client)

    def detach(self, client: mqtt.Client) -> None:
        self._clients.discard(client)
        self._forget(client)

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._thread_id:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._watch, client, sock)

    def _watch(self, client: mqtt.Client, sock: Any) -> None:
        current: Any = client.socket()
        if sock is None or current is not sock:
            return  # closed again before the loop got to it
        fd = int(current.fileno())
        self._forget(client)
        self._fds[client] = fd
        self.loop.add_reader(fd, self._read, client)
        # A write registered from the connect thread before we watched the socket.
        self._want_write(client)

    def _forget(self, client: mqtt.Client) -> None:
        fd = self._fds.pop(client, None)
        self._writing.discard(client)
        if fd is not None:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)

    def _on_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # paho calls this just before it closes the socket; unwatch while the fd is ours.
        if threading.get_ident() == self._thread_id:
            self._forget(client)
        else:
            fd = self._fds.get(client)
            if fd is not None:
                self.loop.call_soon_threadsafe(self._forget_fd, client, fd)

    def _forget_fd(self, client: mqtt.Client, fd: int) -> None:
        if self._fds.get(client) == fd:
            self._forget(client)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if threading.get_ident() != self._thread_id:
            self.loop.call_soon_threadsafe(self._want_write, client)
            return
        # Batch: write every client that has something to send once, at the end of this
        # loop iteration, and watch for writability only if the socket buffer is full.
        # (Registering a writer per message would cost two epoll_ctl calls per publish.)
        self._dirty.add(client)
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush_writes)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._want_write, client)

    def _flush_writes(self) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        for client in dirty:
            if client in self._fds:
                with contextlib.suppress(OSError):
                    client.loop_write()
                self._want_write(client)

    def _want_write(self, client: mqtt.Client) -> None:
        # Re-read paho's state on the loop thread, so calls made from the connect thread
        # cannot arrive in the wrong order.
        fd = self._fds.get(client)
        if fd is None:
            return
        if client.want_write():
            if client not in self._writing:
                self._writing.add(client)
                self.loop.add_writer(fd, self._write, client)
        elif client in self._writing:
            self._writing.discard(client)
            self.loop.remove_writer(fd)

    @staticmethod
    def _read(client: mqtt.Client) -> None:
        client.loop_read()

    def _write(self, client: mqtt.Client) -> None:
        client.loop_write()
        self._want_write(client)

    # -- connecting --------------------------------------------------------------------

    async def connect(self, client: mqtt.Client, host: str, port: int, **kwargs: Any) -> None:
        """``client.connect`` on the connect pool (it blocks on TCP connect and TLS handshake).

        Raises OSError / ssl.SSLError when the socket cannot be opened; the CONNACK
        arrives later through the client's ``on_connect``.
        """
        await self.loop.run_in_executor(self._pool, _connect, client, host, port, kwargs)

    async def reconnect(self, client: mqtt.Client) -> None:
        await self.loop.run_in_executor(self._pool, client.reconnect)

    # -- housekeeping ------------------------------------------------------------------

    def start(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.misc_interval, self._misc)

    def _misc(self) -> None:
        for client in list(self._clients):
            if client.socket() is not None:
                with contextlib.suppress(OSError):
                    client.loop_misc()
        self._timer = self.loop.call_later(self.misc_interval, self._misc)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for client in list(self._fds):
            self._forget(client)
        # Let a connect still running on the pool finish, then close every socket still open
        # (a client dropped with an open socket leaks it until garbage collection).
        self._pool.shutdown(wait=True, cancel_futures=True)
        for client in self._clients:
            close_socket(client)


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 first): exponential from ``low``, capped at
    ``high``, times a random 0.5-1 so a fleet that lost the broker together does not return together."""
    return min(high, low * (2.0 ** min(attempt, 20))) * rng.uniform(0.5, 1.0)


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (one socket per client, plus
    files); returns the limit now in effect, which the hard limit may keep below ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # only a privileged process may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, wanted), wanted))
            hard = wanted
    if soft < wanted:
        soft = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def persistent_connect_args(protocol: int, keepalive: int, session_expiry: int) -> dict[str, Any]:
    """``connect()`` arguments for a persistent session. MQTT 5: never a clean start (the
    client ids are new, and Mosquitto persists only such sessions) and a session expiry;
    3.1.1 keeps its session through ``clean_session=False`` given to the client itself."""
    kwargs: dict[str, Any] = {"keepalive": keepalive}
    if protocol == 5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry
        kwargs.update(clean_start=False, properties=props)
    return kwargs


def close_socket(client: mqtt.Client) -> None:
    """Close a client's sockets without any MQTT exchange (after DISCONNECT and ``loop_stop``,
    or when giving up): its connection, and the socket pair ``loop_start`` opens to wake its
    thread, which paho leaves to the garbage collector (that may finalise the sockets before
    the client: a ResourceWarning)."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
    for name in ("_sockpairR", "_sockpairW"):
        pair = getattr(client, name, None)
        if isinstance(pair, socket.socket):
            with contextlib.suppress(OSError):
                pair.close()
            setattr(client, name, None)


def _connect(client: mqtt.Client, host: str, port: int, kwargs: dict[str, Any]) -> None:
    client.connect(host, port, **kwargs)
    sock = client.socket()
    sock = getattr(sock, "_socket", sock)  # paho's websocket wrapper holds the socket inside
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
