"""A TCP proxy in front of the PostgreSQL server, to stage outages in tests.

``cut()`` does to the service what a server stop does: every open connection is reset
and new ones are refused until ``restore()``. A cut followed at once by a restore is a
server restart as clients see it. The real server keeps running, so the rest of the test
suite (and the test's own checks, which connect directly) never notice.

The proxy runs its own event loop in a thread: the service makes some blocking database
calls on its loop's thread (APScheduler's job store is synchronous), which would
deadlock a proxy sharing that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable


class OutageProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._down = False
        self._loop: asyncio.AbstractEventLoop

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._writers.difference_update((writer, up_writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def _cut(self) -> None:
        self._down = True
        for writer in list(self._writers):
            writer.transport.abort()

    async def _close(self) -> None:
        self._cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    # -- called from the test's loop -----------------------------------------------------
    def cut(self) -> None:
        """The server is gone: reset every connection, refuse new ones."""
        self._call(self._cut)

    def restore(self) -> None:
        self._call(lambda: setattr(self, "_down", False))

    def _call(self, action: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            action()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)


@contextlib.asynccontextmanager
async def outage_proxy(host: str = "127.0.0.1", port: int = 5432) -> AsyncIterator[OutageProxy]:
    """An ``OutageProxy`` serving from its own thread and loop until the block ends."""
    proxy = OutageProxy(host, port)
    loop = asyncio.new_event_loop()
    proxy._loop = loop
    thread = threading.Thread(target=loop.run_forever, name="outage-proxy", daemon=True)
    thread.start()
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(proxy.start(), loop))
    try:
        yield proxy
    finally:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(proxy._close(), loop))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
