"""A TCP forwarder in front of a real server that a test can cut and restore: connections cut
without a restart (tests/servers.py has private servers for real restarts)."""

from __future__ import annotations

import asyncio

from tests.servers import free_port


class Outage:
    """Listens on ``127.0.0.1:port`` and forwards to ``host:target_port`` while up; ``down()``
    refuses new connections and cuts every open one."""

    def __init__(self, host: str, target_port: int) -> None:
        self.target = (host, target_port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.Task[None]] = set()
        self.transports: list[asyncio.BaseTransport] = []

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for transport in self.transports:
            transport.abort()
        self.transports.clear()
        for link in list(self.links):
            link.cancel()
        await asyncio.gather(*self.links, return_exceptions=True)
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.links.add(task)
        self.transports.append(writer.transport)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self.transports.append(up_writer.transport)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.links.discard(task)
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
