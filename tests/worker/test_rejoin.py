"""A worker whose rejoin the server cannot take right now (busy, restarting) asks again, later each
time, instead of staying connected in no room: run as a person runs it, against a Socket.IO server
of the test's own that answers each join_room as the test says."""

from __future__ import annotations

import asyncio
from typing import Any, Self

import pytest
import socketio
from aiohttp import web
from conftest import free_port

from worker.conftest import MODEL, Worker

pytestmark = pytest.mark.slow

BUSY = {"error": {"code": "unavailable", "message": "The server is busy; try again."}}


class ScriptedServer:
    """Accepts any token; answers the joins in `answers` in turn (a peer id: accepted)."""

    def __init__(self, answers: list[dict[str, Any] | str]) -> None:
        self.answers = answers
        self.joins: list[str] = []  # the sid of each join_room, in order
        self.sio = socketio.AsyncServer(async_mode="aiohttp")
        self.sio.on("join_room", self.join_room)
        self.app = web.Application()
        self.sio.attach(self.app)
        self.port = free_port()

    async def join_room(self, sid: str, data: object = None) -> dict[str, Any]:
        self.joins.append(sid)
        answer = self.answers.pop(0)
        return {"peer_id": answer, "peers": [], "ice_servers": []} if isinstance(answer, str) else answer

    async def __aenter__(self) -> Self:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def expect(worker: Worker, pattern: str, timeout: float = 30) -> str:
    return await asyncio.to_thread(worker.expect, pattern, timeout)


async def test_a_rejoin_the_server_cannot_take_is_asked_again_until_it_can() -> None:
    async with ScriptedServer(["peer-1", BUSY, BUSY, "peer-2"]) as server:
        worker = Worker("--server", f"http://127.0.0.1:{server.port}", "--token", "t", "--room", "lab",
                        "--model", MODEL)
        try:
            await expect(worker, r"joined room lab as peer peer-1", timeout=60)
            first = server.joins[0]
            await server.sio.disconnect(first)  # as the server ends a connection: it comes back
            await expect(worker, r"cannot join room 'lab': The server is busy; try again\.; asking again in 1 s")
            await expect(worker, r"cannot join room 'lab': The server is busy; try again\.; asking again in 2 s")
            await expect(worker, r"joined room lab as peer peer-2")
            # All three asked on the one connection it came back on.
            assert len(server.joins) == 4 and len(set(server.joins[1:])) == 1 and server.joins[1] != first
        finally:
            worker.stop()
