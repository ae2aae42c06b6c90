"""A room page keeps its connection to the room: it joins again by itself after a server restart
(new peer id, links made anew, the mesh works again), retries a first connect that fails, stops
and says why when the server refuses it, and asks for new TURN credentials before they expire."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from conftest import LiveServer, start_server
from playwright.async_api import Browser, Page, expect
from realtime.test_credentials import sign_out
from support.accounts import create_room, sign_up
from support.browser import new_context
from support.pages import RoomPage
from support.proxy import SocketGate

from mesh.conftest import peer_pages, room_name

pytestmark = pytest.mark.browser

PROMPT = "You may"


async def self_row_id(peer: RoomPage, other_than: str = "") -> str:
    """This page's peer id from its own row in the peers panel (one other than `other_than`)."""
    row = peer.page.locator(f'[data-testid="peer"][data-link="self"]:not([data-peer-id="{other_than}"])')
    await expect(row).to_have_count(1, timeout=30_000)
    return await row.get_attribute("data-peer-id") or ""


async def test_page_rejoins_after_a_server_restart_and_the_mesh_works_again(tmp_path: Path, browser: Browser) -> None:
    server = start_server(tmp_path)
    try:
        owner = await sign_up(server.url)
        room = await create_room(server.url, owner, room_name(), private=False)
        async with peer_pages(browser, server.url) as open_peer:
            alice, bob = await asyncio.gather(open_peer(room["slug"], owner), open_peer(room["slug"]))
            await alice.wait_for_links(1)
            await bob.wait_for_links(1)
            before = {"alice": await self_row_id(alice), "bob": await self_row_id(bob)}
            await expect(alice.connection).to_be_hidden()

            server.stop()
            for peer in (alice, bob):
                await expect(peer.connection).to_have_attribute("data-state", "reconnecting", timeout=30_000)
            # Still down: it keeps trying, and says which try it is on.
            await expect(alice.connection).to_contain_text("Reconnecting to the room… (attempt 3)", timeout=30_000)
            # Meanwhile prompts still run in this browser.
            await alice.run(PROMPT, 8, "local")
            await expect(alice.output).not_to_be_empty(timeout=30_000)

            server.start_again()
            for peer in (alice, bob):
                await expect(peer.connection).to_have_attribute("data-state", "joined", timeout=60_000)
                await expect(peer.connection).to_be_hidden()
            after = {"alice": await self_row_id(alice, before["alice"]), "bob": await self_row_id(bob, before["bob"])}
            assert after["alice"] != before["alice"] and after["bob"] != before["bob"]
            await alice.wait_for_links(1, timeout=30_000)
            await bob.wait_for_links(1, timeout=30_000)
            await expect(alice.peer_row(after["bob"])).to_have_attribute("data-link", "open")

            job = await alice.run_and_wait(PROMPT, 16, "mesh")
            assert job["status"] == "succeeded" and job["worker_peer"] == after["bob"]
            assert job["requester_peer"] == after["alice"]
            assert not [line for line in alice.console + bob.console if line.startswith("pageerror")]
    finally:
        server.stop()


async def test_a_first_connect_that_fails_is_retried(live_server: LiveServer, browser: Browser) -> None:
    gate = await SocketGate(live_server.port).start()
    account = await sign_up(live_server.url)
    context = await new_context(browser, gate.url, account.session_cookie)
    try:
        peer = await RoomPage(await context.new_page(), gate.url, account=account).open("global")
        # The socket endpoint answers 503: the page says so and keeps trying on its own.
        await expect(peer.connection).to_have_attribute("data-state", "connecting", timeout=30_000)
        await expect(peer.connection).to_contain_text("(attempt 3)", timeout=30_000)
        assert gate.refused >= 2 and gate.passed == 0

        gate.refusing = False
        await expect(peer.connection).to_have_attribute("data-state", "joined", timeout=30_000)
        await expect(peer.connection).to_be_hidden()
        assert await self_row_id(peer)
        assert gate.passed == 1
        await expect(peer.flash).to_be_empty()
    finally:
        await context.close()
        await gate.close()


async def test_a_page_signed_out_elsewhere_stops_and_says_why(live_server: LiveServer, open_peer) -> None:
    peer = await open_peer("global", warm=False)
    await self_row_id(peer)
    sockets: list[str] = []
    peer.page.on("websocket", lambda ws: sockets.append(ws.url))

    await sign_out(live_server.url, peer.account)
    await expect(peer.connection).to_have_attribute("data-state", "refused", timeout=30_000)
    await expect(peer.connection).to_contain_text("Sign in first")
    tried = len(sockets)
    assert tried == 1  # one try after the server closed the socket: refused, so no more
    await asyncio.sleep(3)  # longer than the first few backoff delays together
    assert len(sockets) == tried


# Records the ICE servers of every RTCPeerConnection the page makes and of every later
# setConfiguration, so the test sees which TURN credentials each link got.
RECORD_ICE = """(() => {
  const Native = window.RTCPeerConnection;
  window.iceMade = [];
  window.iceSet = [];
  window.RTCPeerConnection = class extends Native {
    constructor(config) {
      super(config);
      window.iceMade.push(JSON.parse(JSON.stringify(config?.iceServers ?? [])));
    }
    setConfiguration(config) {
      window.iceSet.push(JSON.parse(JSON.stringify(config?.iceServers ?? [])));
      return super.setConfiguration(config);
    }
  };
})();"""

TURN_ENV = {
    "TURN_URLS": '["turn:turn.example.org:3478?transport=udp"]',
    "TURN_SECRET": "coturn static-auth-secret",
    "TURN_TTL": "60",  # the shortest the settings allow: a refresh within 48 s
}


def turn_usernames(frame: str) -> list[str]:
    """The TURN usernames in a Socket.IO ack frame (`43<id>[{...}]`) that carries ICE servers."""
    if not frame.startswith("43") or '"ice_servers"' not in frame:
        return []
    ack = json.loads(frame[frame.index("[") :])[0]
    return [server["username"] for server in ack["ice_servers"] if "username" in server]


async def test_turn_credentials_are_refreshed_before_they_expire_and_new_links_use_them(
    tmp_path: Path, browser: Browser
) -> None:
    server = start_server(tmp_path, **TURN_ENV)
    try:
        owner = await sign_up(server.url)
        room = await create_room(server.url, owner, room_name(), private=False)
        async with peer_pages(browser, server.url) as open_peer:
            frames: list[tuple[float, str, str]] = []  # (when, "sent" | "received", payload)

            async def instrument(page: Page) -> None:
                await page.add_init_script(RECORD_ICE)
                page.on("websocket", lambda ws: (
                    ws.on("framesent", lambda f: frames.append((time.time(), "sent", str(f)))),
                    ws.on("framereceived", lambda f: frames.append((time.time(), "received", str(f)))),
                ))

            alice = await open_peer(room["slug"], owner, warm=False, before_open=instrument)
            alice_id = await self_row_id(alice)
            bob = await open_peer(room["slug"], warm=False)
            await alice.wait_for_links(1)
            [joined] = [name for _, way, f in frames if way == "received" for name in turn_usernames(f)][:1]
            expires = int(joined.split(":")[0])

            async with asyncio.timeout(90):
                while not any(way == "sent" and '"refresh_ice"' in f for _, way, f in frames):
                    await asyncio.sleep(0.5)
                while len([n for _, way, f in frames if way == "received" for n in turn_usernames(f)]) < 2:
                    await asyncio.sleep(0.1)
            asked_at = next(t for t, way, f in frames if way == "sent" and '"refresh_ice"' in f)
            refreshed = [n for _, way, f in frames if way == "received" for n in turn_usernames(f)][1]
            assert asked_at < expires  # asked before the first credentials ran out
            assert int(refreshed.split(":")[0]) > expires and refreshed.split(":")[1] == joined.split(":")[1]

            # The link alive during the refresh got the new credentials for an ICE restart...
            set_names = await alice.page.evaluate("window.iceSet.flat().map(s => s.username).filter(Boolean)")
            assert refreshed in set_names
            assert not [line for line in alice.console if "keeps its ICE servers" in line]  # taken
            # ...and a link made after it starts with them.
            carol = await open_peer(room["slug"], warm=False)
            await alice.wait_for_links(2)
            made = await alice.page.evaluate("window.iceMade.map(list => list.map(s => s.username).filter(Boolean))")
            assert made[0] == [joined] and made[-1] == [refreshed]
            await expect(carol.connection).to_be_hidden()
            assert await self_row_id(alice) == alice_id  # the same connection all along: no rejoin
            await expect(bob.connection).to_be_hidden()
    finally:
        server.stop()
