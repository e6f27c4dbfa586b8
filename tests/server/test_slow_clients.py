"""Slow and hostile clients against the real listener on loopback, while well-behaved clients keep being answered.

The server runs in the test's event loop (so its counters and connections can be inspected); every client
is a raw socket that writes bytes exactly as a slowloris, a stalled upload or an idle squatter would.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web

from extender.metrics import Metrics
from extender.server.app import build_app
from extender.server.guard import ConnectionGuard, GuardedSite
from extender.server.run import start_listener
from extender.server.scheduling import SchedulingService
from extender.settings import Settings
from extender.view.store import ClusterView
from tests.support import free_port

HOST = "127.0.0.1"
FILTER_BODY = orjson.dumps(
    {
        "Pod": {
            "metadata": {"name": "p", "namespace": "ml"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}]},
        },
        "Nodes": None,
        "NodeNames": ["h100-exact", "a100-balanced"],
    }
)


@dataclass
class Server:
    settings: Settings
    guard: ConnectionGuard
    runner: web.AppRunner
    site: GuardedSite

    @property
    def port(self) -> int:
        return self.site.bound_port


async def start_server(view: ClusterView, ssl_context: ssl.SSLContext | None = None, **settings: Any) -> Server:
    """The extender's app behind its real listener (guard, timeouts, TLS) on a free loopback port."""
    s = Settings.of(host=HOST, port=free_port(), **settings)
    metrics = Metrics(view)
    guard = ConnectionGuard.from_settings(s.server)
    app = build_app(s, view, metrics, SchedulingService(view, s, metrics), guard=guard)
    runner, site = await start_listener(app, s.server, guard, ssl_context)
    return Server(s, guard, runner, site)


ServerFactory = Callable[..., Awaitable[Server]]


@contextlib.asynccontextmanager
async def servers(view: ClusterView) -> AsyncIterator[ServerFactory]:
    """Start servers over ``view`` on demand; all stopped on exit, also when the test failed."""
    started: list[Server] = []

    async def factory(ssl_context: ssl.SSLContext | None = None, **settings: Any) -> Server:
        server = await start_server(view, ssl_context, **settings)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            await server.runner.cleanup()


@pytest.fixture
async def serve(demo_view: ClusterView) -> AsyncIterator[ServerFactory]:
    async with servers(demo_view) as factory:
        yield factory


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (Content-Length framed, as aiohttp sends these)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed without a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def http_request(method: str, path: str, body: bytes = b"", *, keep_alive: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
    head += "Content-Type: application/json\r\n" if body else ""
    head += "" if keep_alive else "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """A well-behaved client: one request on a new connection; (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
        )
        try:
            writer.write(http_request(method, path, body))
            status, _, data = await read_response(reader)
            return status, data
        finally:
            writer.close()


async def answered_meanwhile(port: int, rounds: int = 8, pause: float = 0.1) -> float:
    """Filter calls (the real payload) answered correctly; the slowest answer's seconds."""
    slowest = 0.0
    for _ in range(rounds):
        started = time.monotonic()
        status, body = await request(port, "POST", "/filter", FILTER_BODY)
        slowest = max(slowest, time.monotonic() - started)
        assert status == 200, body
        assert orjson.loads(body)["NodeNames"] == ["h100-exact"]
        await asyncio.sleep(pause)
    return slowest


async def wait_until(what: str, probe: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_slowloris_headers_are_cut_off_while_others_are_answered(serve: ServerFactory) -> None:
    server = await serve(read_timeout_s=1.0)
    attackers = [await asyncio.open_connection(HOST, server.port) for _ in range(40)]
    started = time.monotonic()
    for _, writer in attackers:
        writer.write(b"POST /filter HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:  # one more header line every 0.2 s: never a complete request
        for n in range(20):
            await asyncio.sleep(0.2)
            for reader, writer in attackers:
                if not reader.at_eof() and not writer.is_closing():
                    writer.write(f"X-Slow-{n}: 1\r\n".encode())

    trickling = asyncio.create_task(trickle())
    try:
        slowest = await answered_meanwhile(server.port)
        assert slowest < 0.5, f"a filter call took {slowest:.2f} s while 40 slow clients were connected"
        for reader, _ in attackers:
            answer = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:80]
            assert b"read_timeout_s" in answer
        cut_after = time.monotonic() - started
        assert 0.9 < cut_after < 3.0, cut_after
        print(f"40 slowloris connections cut after {cut_after:.2f} s; slowest filter meanwhile {slowest * 1000:.0f} ms")
    finally:
        trickling.cancel()
        for _, writer in attackers:
            writer.close()
    assert server.guard.stats.header_timeouts == 40
    await wait_until("connections released", lambda: server.guard.open_connections == 0)
    assert (await request(server.port, "GET", "/healthz"))[0] == 200


async def test_a_stalled_body_gets_408_and_its_memory_is_freed(serve: ServerFactory) -> None:
    server = await serve(read_timeout_s=2.0, max_body_bytes=64 * 2**20)
    tracemalloc.start()
    try:
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(
            b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000000\r\n\r\n"
        )
        chunk = b" " * 2**20
        for _ in range(24):  # 24 of the announced 60 MB, then nothing
            writer.write(chunk)
            await writer.drain()
        await wait_until(
            "the server to buffer the partial body", lambda: tracemalloc.get_traced_memory()[0] - baseline > 20e6
        )
        held = tracemalloc.get_traced_memory()[0] - baseline
        assert (await request(server.port, "GET", "/healthz"))[0] == 200
        await answered_meanwhile(server.port, rounds=3)
        status, headers, body = await asyncio.wait_for(read_response(reader), timeout=5)
        assert status == 408 and headers["connection"] == "close"
        assert b"request body not received within 2 s" in body
        assert await asyncio.wait_for(reader.read(), timeout=2) == b""  # closed: no lingering read of the rest
        writer.close()
        await asyncio.sleep(0.05)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert held > 20e6 and after < 3e6, f"held {held / 1e6:.1f} MB while stalled, {after / 1e6:.1f} MB after"
    print(f"stalled body: {held / 1e6:.1f} MB held, {after / 1e6:.2f} MB after the 408")
    assert server.guard.stats.body_timeouts == 1
    await wait_until("connections released", lambda: server.guard.open_connections == 0)


async def test_an_announced_body_over_the_limit_is_refused_before_it_is_read(serve: ServerFactory) -> None:
    server = await serve(max_body_bytes=1000)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    started = time.monotonic()
    writer.write(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")  # and no body at all
    status, headers, body = await asyncio.wait_for(read_response(reader), timeout=2)
    assert time.monotonic() - started < 1.0
    assert status == 413 and headers["connection"] == "close"
    assert b"larger than 1000 bytes (setting max_body_bytes)" in body
    writer.close()


async def test_at_the_connection_limit_mid_request_clients_make_new_ones_wait(serve: ServerFactory) -> None:
    server = await serve(max_connections=5, read_timeout_s=1.0)
    attackers = [await asyncio.open_connection(HOST, server.port) for _ in range(5)]
    for _, writer in attackers:
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # mid-headers: not idle, cannot be evicted
    await wait_until("5 connections", lambda: server.guard.open_connections == 5)
    status, body = await request(server.port, "GET", "/healthz")
    assert status == 503 and b"max_connections" in body
    assert server.guard.stats.refused_at_limit == 1
    for reader, _ in attackers:  # the read deadline frees the slots ...
        assert (await asyncio.wait_for(reader.read(), timeout=3)).startswith(b"HTTP/1.1 408")
    assert (await request(server.port, "GET", "/healthz"))[0] == 200  # ... and newcomers are served again
    for _, writer in attackers:
        writer.close()


async def test_at_the_connection_limit_the_longest_idle_connection_makes_room(serve: ServerFactory) -> None:
    server = await serve(max_connections=5)
    squatters = []
    for _ in range(5):  # connect and say nothing
        squatters.append(await asyncio.open_connection(HOST, server.port))
        await asyncio.sleep(0.05)
    await wait_until("5 connections", lambda: server.guard.open_connections == 5)
    await asyncio.sleep(1.1)  # older than IDLE_EVICTION_AGE_S
    assert (await request(server.port, "POST", "/filter", FILTER_BODY))[0] == 200
    assert server.guard.stats.evicted_idle == 1
    first_reader = squatters[0][0]
    assert await asyncio.wait_for(first_reader.read(), timeout=2) == b""  # the oldest one was closed
    for _, writer in squatters:
        writer.close()


async def test_keep_alive_clients_may_idle_between_requests_longer_than_the_read_timeout(
    serve: ServerFactory,
) -> None:
    # kube-scheduler keeps its connection open between pods: the read deadline runs per request, not per connection.
    server = await serve(read_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(HOST, server.port)
    for _ in range(3):
        writer.write(http_request("POST", "/filter", FILTER_BODY, keep_alive=True))
        status, headers, body = await asyncio.wait_for(read_response(reader), timeout=2)
        assert status == 200 and orjson.loads(body)["NodeNames"] == ["h100-exact"]
        assert headers.get("connection", "keep-alive").lower() != "close"
        await asyncio.sleep(0.8)
    assert server.guard.stats.header_timeouts == 0
    writer.close()
