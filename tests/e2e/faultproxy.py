"""A loopback TCP proxy that can be paused, cut and made to refuse: network faults on demand.

    with FaultProxy(upstream_port) as proxy:
        client connects to 127.0.0.1:proxy.port
        proxy.pause()    # stop forwarding both ways; sockets stay open (a stalled connection)
        proxy.resume()   # forward again, including what queued up meanwhile
        proxy.cut()      # close every open connection (the peers see a reset or EOF)
        proxy.refuse(True)   # close new connections at once, as if nothing listened

    FaultProxy(upstream_port, delay_s=0.5)   # every byte arrives 0.5 s late, both ways, in order (a slow link)

The proxy runs an asyncio loop in a daemon thread of the calling process and binds 127.0.0.1 only. TLS
passes through untouched (the client still talks to the upstream's certificate). While paused, new
connections are accepted by the kernel and then held without a byte forwarded: a black hole, as a
half-dead load balancer or a dropped route leaves it, not a refused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")
CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *, delay_s: float = 0.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = delay_s
        """How long each chunk read is held before it is written on (0: at once)."""
        self.port = 0
        self.connections_total = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._forwarding: asyncio.Event | None = None
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- control, from any thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def pause(self) -> None:
        """Stop forwarding in both directions; every socket stays open and nothing is read from it."""
        self._call(self._set_forwarding(False))

    def resume(self) -> None:
        self._call(self._set_forwarding(True))

    def cut(self) -> int:
        """Close every open connection; returns how many sockets were closed."""
        return self._call(self._cut())

    def refuse(self, refusing: bool) -> None:
        """Close connections as soon as they are accepted (True), or serve them again (False)."""
        self._refusing = refusing

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --- inside the proxy's loop ------------------------------------------------------------------------

    async def _start(self) -> None:
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _set_forwarding(self, on: bool) -> None:
        assert self._forwarding is not None
        if on:
            self._forwarding.set()
        else:
            self._forwarding.clear()

    async def _cut(self) -> int:
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        self._writers.clear()
        return len(writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.connections_total += 1
        if self._refusing:
            writer.transport.abort()
            return
        assert self._forwarding is not None
        self._writers.add(writer)
        await self._forwarding.wait()  # a paused proxy holds new connections without a byte forwarded
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            for task in pumps:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.delay_s > 0:
            await self._pump_late(reader, writer)
            return
        assert self._forwarding is not None
        while True:
            await self._forwarding.wait()  # paused: nothing is read, so the sender's window fills up
            data = await reader.read(CHUNK)
            if not data:
                return
            await self._forwarding.wait()  # paused after the read: hold what was read
            writer.write(data)
            await writer.drain()

    async def _pump_late(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """:meth:`_pump` with every chunk written ``delay_s`` after it was read, in order; what was read before
        the peer closed is still delivered, late."""
        assert self._forwarding is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def send() -> None:
            assert self._forwarding is not None
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._forwarding.wait()
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while True:
                await self._forwarding.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                queue.put_nowait((loop.time() + self.delay_s, data))
            queue.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
