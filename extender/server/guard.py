"""Connections under slow or hostile clients: aiohttp has no header or body read timeout and no connection limit.

:class:`ConnectionGuard` wraps each connection's protocol and :class:`GuardedSite` listens with it; the app's
middleware (``app._guard_requests``) reads each body within the same deadline and enforces client certificates.

- A request must arrive whole, headers and body, within ``read_timeout_s`` of its first byte. A client that
  trickles its headers (slowloris) has its connection closed with a 408; one that stalls mid-body gets a 408
  and the connection is closed, so the partial body is freed at once (no lingering read of the rest).
- A body whose Content-Length is over ``max_body_bytes`` is refused before any of it is read.
- At most ``max_connections`` connections are open. At the limit a new connection replaces the one idle the
  longest (an idle keep-alive client just reconnects); when every connection is mid-request, the new one
  gets a 503 and is closed. Requests in flight are bounded by the same number: aiohttp answers one request
  at a time per connection.
- Idle keep-alive connections close after ``keepalive_timeout_s`` (aiohttp's own timer).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..settings import ServerSettings

if TYPE_CHECKING:
    import ssl

IDLE_EVICTION_AGE_S = 1.0
"""A connection idle for less than this is not closed to make room: its first request may be on the wire."""


@dataclass
class GuardStats:
    """What the guard cut off or refused, for tests and ``/metrics``."""

    refused_at_limit: int = 0
    evicted_idle: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    client_certificate_refusals: int = 0


class _Phase(enum.Enum):
    IDLE = "idle"  # between requests, or before the first byte of the first one
    READING = "reading"  # headers (or a body) under way: the read deadline runs
    HANDLING = "handling"  # the middleware has the request


def _raw_response(status: str, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedConnection(asyncio.Protocol):
    """Forwards to aiohttp's protocol; adds the header deadline and the connection accounting."""

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self.guard = guard
        self.inner = inner
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.BaseTransport | None = None
        self.admitted = False
        self.phase = _Phase.IDLE
        self.idle_since = self.loop.time()
        self.deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.guard.admit(self):
            _answer_and_close(
                transport, _raw_response("503 Service Unavailable", "too many connections (setting max_connections)")
            )
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.admitted:
            self.admitted = False
            self.guard.forget(self)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if data and self.phase is _Phase.IDLE:
            self.phase = _Phase.READING
            self.deadline = self.loop.time() + self.guard.read_timeout_s
            self._timer = self.loop.call_at(self.deadline, self._expired)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.admitted:
            self.inner.eof_received()
        return None  # close the transport, as aiohttp's protocol does

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    # --- the request's life, told by the middleware -------------------------------------------------
    def headers_received(self) -> float:
        """The headers are in: stop the header timer; returns the time left for the body."""
        self._cancel_timer()
        if self.phase is not _Phase.READING:  # pipelined bytes came while busy: a full deadline for the body
            self.deadline = self.loop.time() + self.guard.read_timeout_s
        self.phase = _Phase.HANDLING
        return self.deadline - self.loop.time()

    def request_done(self) -> None:
        self.phase = _Phase.IDLE
        self.idle_since = self.loop.time()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.phase is not _Phase.READING or self.transport is None:
            return
        self.guard.stats.header_timeouts += 1
        _answer_and_close(
            self.transport,
            _raw_response("408 Request Timeout", "request headers not received in time (setting read_timeout_s)"),
        )


def _answer_and_close(transport: asyncio.BaseTransport, response: bytes) -> None:
    # A stream transport; not an asyncio.WriteTransport instance on every loop (uvloop's derive from neither).
    cast(asyncio.WriteTransport, transport).write(response)
    transport.close()


class ConnectionGuard:
    """The open connections of one listener, their deadlines and the connection limit."""

    def __init__(self, *, read_timeout_s: float, max_connections: int) -> None:
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.stats = GuardStats()
        self._open: dict[asyncio.BaseTransport, _GuardedConnection] = {}

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ConnectionGuard:
        return cls(read_timeout_s=settings.read_timeout_s, max_connections=settings.max_connections)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def wrap(self, inner: RequestHandler) -> asyncio.Protocol:
        return _GuardedConnection(self, inner)

    def connection(self, transport: asyncio.BaseTransport | None) -> _GuardedConnection | None:
        return None if transport is None else self._open.get(transport)

    def admit(self, connection: _GuardedConnection) -> bool:
        if len(self._open) >= self.max_connections:
            oldest = connection.loop.time() - IDLE_EVICTION_AGE_S
            idle = [c for c in self._open.values() if c.phase is _Phase.IDLE and c.idle_since <= oldest]
            if not idle:
                self.stats.refused_at_limit += 1
                return False
            victim = min(idle, key=lambda c: c.idle_since)
            self.stats.evicted_idle += 1
            self.forget(victim)
            victim.close()
        assert connection.transport is not None
        self._open[connection.transport] = connection
        return True

    def forget(self, connection: _GuardedConnection) -> None:
        if connection.transport is not None and self._open.get(connection.transport) is connection:
            del self._open[connection.transport]


class GuardedSite(web.BaseSite):
    """A TCP listener (with TLS if given a context) whose connections go through a :class:`ConnectionGuard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self.guard = guard
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self.guard.wrap(server()),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            # A client that never finishes the TLS handshake holds no slot, but is cut off all the same.
            ssl_handshake_timeout=self.guard.read_timeout_s if self._ssl_context else None,
        )
        if self._server.sockets:
            self.bound_port = int(self._server.sockets[0].getsockname()[1])


class GuardCollector(Collector):
    """``mig_extender_connections_*`` and client-certificate refusals, from a guard's stats."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.guard.stats
        yield GaugeMetricFamily(
            "mig_extender_connections_open", "Open HTTP connections.", value=self.guard.open_connections
        )
        dropped = CounterMetricFamily(
            "mig_extender_connections_dropped",
            "Connections closed by the server: at max_connections (refused, or idle ones evicted), or a request "
            "not received within read_timeout_s.",
            labels=["reason"],
        )
        dropped.add_metric(["max-connections"], stats.refused_at_limit)
        dropped.add_metric(["idle-evicted"], stats.evicted_idle)
        dropped.add_metric(["header-timeout"], stats.header_timeouts)
        dropped.add_metric(["body-timeout"], stats.body_timeouts)
        yield dropped
        yield CounterMetricFamily(
            "mig_extender_client_certificate_refusals",
            "Requests answered 403 for want of a client certificate (tls_client_ca_file).",
            value=stats.client_certificate_refusals,
        )
