"""Clients that break the protocol on purpose: sockets that never sign in, frames that are not
engine.io or Socket.IO, binary attachments, control characters in what the server stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from conftest import TEST_DATABASE_URL, LiveServer, postgres_reachable, require, start_server

from realtime.conftest import Account, sign_up


class RawSocket:
    """An engine.io websocket driven by hand: it answers pings and keeps every other text frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            if message.data == "2":
                await self.ws.send_str("3")
                continue
            self.frames.append(message.data)
            self._arrived.set()
        self.closed.set()

    async def expect(self, prefix: str, timeout: float = 10) -> str:
        """The first frame so far or to come that starts with `prefix`."""
        async with asyncio.timeout(timeout):
            while True:
                for frame in self.frames:
                    if frame.startswith(prefix):
                        self.frames.remove(frame)
                        return frame
                self._arrived.clear()
                await self._arrived.wait()

    async def errors(self, code: str, timeout: float = 10) -> dict[str, Any]:
        """The next `error` event with `code`."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.expect('42["error"')
                payload = json.loads(frame[2:])[1]
                if payload["code"] == code:
                    return payload


@pytest_asyncio.fixture
async def raw(live_server: LiveServer) -> AsyncIterator[Any]:
    """Open raw sockets to a server (the shared one unless told); all are closed afterwards."""
    opened: list[RawSocket] = []
    async with aiohttp.ClientSession() as http:

        async def open_socket(server: LiveServer = live_server, token: str | None = None) -> RawSocket:
            url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            sock = RawSocket(await http.ws_connect(url, headers=headers, autoping=True))
            opened.append(sock)
            await sock.expect("0{")
            if token:
                await sock.ws.send_str("40")
                await sock.expect("40{")
            return sock

        yield open_socket
        for sock in opened:
            await sock.ws.close()
            sock._reader.cancel()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that gives a websocket one second to sign in."""
    server = start_server(tmp_path_factory.mktemp("strict"), SOCKET_AUTH_TIMEOUT="1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    problem = asyncio.run(postgres_reachable(TEST_DATABASE_URL))
    require(problem is None, problem or "")
    tmp: Path = tmp_path_factory.mktemp("postgres-live")
    server = start_server(tmp, TEST_DATABASE_URL)
    yield server
    server.stop()


async def test_socket_that_never_signs_in_is_closed(strict_server: LiveServer, raw) -> None:
    account = await sign_up(strict_server.url)
    silent = await raw(strict_server)
    refused = await raw(strict_server)
    await refused.ws.send_str("40")  # no credentials: refused, and it stays to try again
    assert "Sign in first" in await refused.expect("44")
    signed_in = await raw(strict_server, token=account.token)

    # Both answer every ping, which kept them open for good before.
    await asyncio.wait_for(silent.closed.wait(), 20)
    await asyncio.wait_for(refused.closed.wait(), 20)
    assert not signed_in.closed.is_set()
    await signed_in.ws.send_str("421" + json.dumps(["join_room", {"room": "global"}]))
    assert "peer_id" in await signed_in.expect("431")
    assert "Traceback" not in strict_server.log_path.read_text()


async def test_socket_that_leaves_the_namespace_but_stays_open_is_closed(strict_server: LiveServer, raw) -> None:
    account = await sign_up(strict_server.url)
    sock = await raw(strict_server, token=account.token)
    await asyncio.sleep(1.5)  # past the deadline it had when it opened, met by signing in
    await sock.ws.send_str("41")  # Socket.IO DISCONNECT; the websocket itself stays
    await asyncio.wait_for(sock.closed.wait(), 20)


@pytest.mark.parametrize(
    ("frame", "closes"),
    [
        # Not engine.io at all: the socket closes.
        ("", True),
        ("9", True),
        ("x", True),
        # engine.io packets a client never sends, and broken Socket.IO packets: ignored or
        # answered with `error`, and the socket keeps working.
        ("0{}", False),
        ("6", False),
        ("4", False),
        ("4{", False),
        ("42[", False),
        ('40{"token":1', False),
        ("43999[]", False),
        # Nested past the JSON decoder's recursion limit (a RecursionError inside the decoder).
        ('42["status",' + "[" * 100_000 + "]" * 100_000 + "]", False),
    ],
)
async def test_bad_frame_logs_no_traceback(strict_server: LiveServer, raw, frame: str, closes: bool) -> None:
    account = await sign_up(strict_server.url)
    anonymous = await raw(strict_server)
    signed_in = await raw(strict_server, token=account.token)
    before = strict_server.log_path.read_text()

    await anonymous.ws.send_str(frame)
    await signed_in.ws.send_str(frame)
    if closes:
        await asyncio.wait_for(signed_in.closed.wait(), 10)
    else:
        await signed_in.ws.send_str("421" + json.dumps(["join_room", {"room": "global"}]))
        assert "peer_id" in await signed_in.expect("431")
    logged = strict_server.log_path.read_text()[len(before):]
    assert "Traceback" not in logged and "ERROR" not in logged
    assert len(logged.splitlines()) <= 1


async def test_binary_attachment_is_refused_at_once(live_server: LiveServer, account: Account, raw) -> None:
    sock = await raw(token=account.token)
    # Announces 99,999 attachments: the stock server would hold every binary frame that follows.
    await sock.ws.send_str('4599999-["status",{"_placeholder":true,"num":0}]')
    refused = await sock.errors("binary")
    assert "JSON only" in refused["message"]
    await sock.ws.send_bytes(b"\x00" * 1024)
    await sock.errors("binary")
    await sock.ws.send_str("421" + json.dumps(["join_room", {"room": "global"}]))
    assert "peer_id" in await sock.expect("431")


async def test_binary_frames_count_against_the_rate_limit(live_server: LiveServer, account: Account, raw) -> None:
    sock = await raw(token=account.token)
    await sock.ws.send_str('451-["status",{"_placeholder":true,"num":0}]')
    for _ in range(300):  # past the burst of 200
        await sock.ws.send_bytes(b"\x00" * 1024)
    assert "at most" in (await sock.errors("rate_limited"))["message"]
    await asyncio.sleep(1)  # the bucket refills; the connection is still up
    await sock.ws.send_str("421" + json.dumps(["join_room", {"room": "global"}]))
    assert "peer_id" in await sock.expect("431")


@pytest.fixture(params=["sqlite", "postgres"])
def any_server(request: pytest.FixtureRequest) -> LiveServer:
    return request.getfixturevalue("live_server" if request.param == "sqlite" else "postgres_server")


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("join_room", {"room": "global", "capabilities": {"user_agent": "Mozilla\x00/5.0"}}),
        ("join_room", {"room": "glo\x00bal"}),
        ("join_room", {"room": "global", "capabilities": {"models_warm": ["tiny\x00gpt2"]}}),
        ("join_room", {"room": "global", "capabilities": {"user_agent": "line\nbreak"}}),
        ("status", {"state": "idle", "models_warm": ["tiny\x1bgpt2"]}),
    ],
)
async def test_control_characters_in_stored_strings_are_invalid(any_server: LiveServer, raw, event: str, payload: dict[str, Any]) -> None:
    account = await sign_up(any_server.url)
    sock = await raw(any_server, token=account.token)
    if event == "status":
        await sock.ws.send_str("421" + json.dumps(["join_room", {"room": "global"}]))
        assert "peer_id" in await sock.expect("431")
    await sock.ws.send_str("422" + json.dumps([event, payload]))
    error = await sock.errors("invalid")
    assert "without control characters" in error["message"]
    if event == "join_room":
        assert json.loads((await sock.expect("432"))[3:])[0]["error"]["code"] == "invalid"
    await asyncio.sleep(1.5)  # past a presence flush, which writes statuses
    assert "Traceback" not in any_server.log_path.read_text()
