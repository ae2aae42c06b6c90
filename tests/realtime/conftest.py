"""Socket test helpers: Socket.IO clients that record what they hear, and accounts to connect as."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
import socketio
from conftest import LiveServer
from support.accounts import Account, create_room, room_peers, sign_up  # noqa: F401 (tests import them from here)


class Peer:
    """A python-socketio client that keeps every event it receives, in order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[Any]] = defaultdict(list)
        self.peer_id: str | None = None
        self._arrived = asyncio.Event()
        self.client.on("*", self._record)
        self.client.on("connect_error", lambda data: self.events["connect_error"].append(data))
        self.client.on("disconnect", self._disconnected)

    async def _record(self, event: str, *args: Any) -> None:
        self.events[event].append(args[0] if len(args) == 1 else list(args))
        self._arrived.set()

    async def _disconnected(self, reason: Any = None) -> None:
        await self._record("disconnect", reason)

    async def connect(self, url: str, *, cookie: str | None = None, token: str | None = None, auth: Any = None) -> None:
        headers = {}
        if cookie is not None:
            headers["Cookie"] = f"mesh_session={cookie}"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        await self.client.connect(url, headers=headers, auth=auth, transports=["websocket"], wait_timeout=10)

    async def join(self, room: str, **capabilities: Any) -> dict[str, Any]:
        ack = await self.client.call("join_room", {"room": room, "capabilities": capabilities}, timeout=10)
        if "peer_id" in ack:
            self.peer_id = ack["peer_id"]
        return ack

    async def emit(self, event: str, data: Any) -> None:
        await self.client.emit(event, data)

    async def wait_for(self, event: str, match: Callable[[Any], bool] = lambda _: True, timeout: float = 10) -> Any:
        """The first `event` payload (past or future) for which `match` is true."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for payload in self.events[event]:
                if match(payload):
                    return payload
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no matching {event!r} within {timeout}s; got {dict(self.events)}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()


def offer(sdp: str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n") -> dict[str, str]:
    return {"type": "offer", "sdp": sdp}


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[Callable[[], Peer]]:
    """Make as many clients as a test needs; all are disconnected afterwards."""
    made: list[Peer] = []

    def make() -> Peer:
        peer = Peer()
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.close()


@pytest_asyncio.fixture(scope="session")
async def account(live_server: LiveServer) -> Account:
    return await sign_up(live_server.url, "rt")


@pytest_asyncio.fixture(scope="session")
async def other_account(live_server: LiveServer) -> Account:
    return await sign_up(live_server.url, "rt")


JoinedPair = Callable[[str], Awaitable[tuple[Peer, Peer]]]


@pytest_asyncio.fixture
async def joined_pair(live_server: LiveServer, account: Account, other_account: Account, peers: Callable[[], Peer]) -> JoinedPair:
    """Connect alice (`account`) and bob (`other_account`) and join both to a room, alice first."""

    async def join(room: str) -> tuple[Peer, Peer]:
        alice, bob = peers(), peers()
        await alice.connect(live_server.url, token=account.token)
        await bob.connect(live_server.url, token=other_account.token)
        await alice.join(room)
        await bob.join(room)
        return alice, bob

    return join
