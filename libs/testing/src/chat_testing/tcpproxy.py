"""A small asyncio TCP proxy for fault injection: put it between a service and PostgreSQL,
RabbitMQ or Redis, then cut the link (existing connections reset, new ones refused at once),
blackhole it (every byte and every new connection held, nothing answered and nothing refused,
as a network that drops packets: what was held flows once it is restored), add latency, and
restore it. :class:`BackgroundProxy` runs one in a thread of its own, for a stack of processes
that must reach it between tests too."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._host = host
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.down = False
        self.latency = 0.0
        self.port = 0
        self._flowing: asyncio.Event | None = None

    async def start(self, port: int = 0) -> TcpProxy:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self._host, port)
        sock: socket.socket = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def cut(self) -> None:
        """Reset every open link and refuse new ones until :meth:`restore`."""
        self.down = True
        for writer in list(self._links):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._links.clear()

    def blackhole(self) -> None:
        """Hold every byte both ways and every new connection until :meth:`restore`."""
        assert self._flowing is not None
        self._flowing.clear()

    def restore(self) -> None:
        self.down = False
        if self._flowing is not None:
            self._flowing.set()

    async def _flow(self) -> None:
        if self._flowing is not None:
            await self._flowing.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        self._links.add(writer)
        await self._flow()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                await self._flow()
                if self.down:
                    break
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(sink)
            with contextlib.suppress(Exception):
                if self.down:
                    sink.transport.abort()
                else:
                    sink.close()


class BackgroundProxy:
    """A :class:`TcpProxy` on an event loop of its own thread, driven from any thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._proxy = TcpProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._proxy.port

    def start(self) -> BackgroundProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._proxy.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, action: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def cut(self) -> None:
        self._call(self._proxy.cut)

    def blackhole(self) -> None:
        self._call(self._proxy.blackhole)

    def restore(self) -> None:
        self._call(self._proxy.restore)
