"""A TCP proxy in front of a live server whose Socket.IO endpoint can be made unavailable: while
`refusing`, websocket upgrades to /socket.io/ get 503 (as from a load balancer whose app is not
up yet); everything else, and every upgrade after, passes through untouched."""

from __future__ import annotations

import asyncio
import contextlib

REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class SocketGate:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refusing = True
        self.refused = 0  # upgrades answered 503
        self.passed = 0  # upgrades let through
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> SocketGate:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        # Chromium opens every websocket on a connection of its own, so its first request says it all.
        upgrade = head.startswith(b"GET /socket.io/") and b"upgrade: websocket" in head.lower()
        if upgrade and self.refusing:
            self.refused += 1
            writer.write(REFUSAL)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        self.passed += upgrade
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.append(upstream_writer)
        upstream_writer.write(head)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
