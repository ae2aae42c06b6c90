"""The browser side in headless Chromium: signaling.js against the real server, the live peers panel."""

from __future__ import annotations

import pytest
from conftest import LiveServer
from support.accounts import Account, create_room, sign_up
from support.browser import new_context, sign_in
from support.pages import RoomPage

pytestmark = pytest.mark.browser

CONNECT = """async (slug) => {
  const { connectRoom } = await import("/static/js/signaling.js");
  const conn = await connectRoom(slug, { capabilities: { backend: "wasm" } });
  window.heard = [];
  for (const type of ["peer_joined", "peer_left", "peer_updated", "signal", "error"]) {
    conn.addEventListener(type, (e) => window.heard.push({ type, detail: e.detail }));
  }
  window.conn = conn;
  return { peerId: conn.peerId, peers: conn.peers, iceServers: conn.iceServers };
}"""


async def open_room(page, server: LiveServer, account: Account, slug: str) -> RoomPage:
    await sign_in(page.context, server.url, account.session_cookie)
    return await RoomPage(page, server.url, account=account).open(slug)


async def test_connect_room_relays_signals_and_presence_between_pages(live_server: LiveServer, browser) -> None:
    alice, bob = await sign_up(live_server.url), await sign_up(live_server.url)
    room = await create_room(live_server.url, alice, "browser relay", private=False)
    pages = []
    for account in (alice, bob):
        context = await new_context(browser)
        page = await context.new_page()
        await open_room(page, live_server, account, room["slug"])
        pages.append(page)
    page_a, page_b = pages
    try:
        a = await page_a.evaluate(CONNECT, room["slug"])
        b = await page_b.evaluate(CONNECT, room["slug"])
        # The room pages joined as mesh peers of their own too; these connections are extra ones.
        assert a["peerId"] in [p["peer_id"] for p in b["peers"]]
        assert b["iceServers"] == []  # the test server configures none

        await page_a.wait_for_function(
            "id => window.conn.peers.some(p => p.peer_id === id)", arg=b["peerId"], timeout=10_000
        )
        await page_a.evaluate(
            "([to]) => window.conn.signal(to, 'offer', {type: 'offer', sdp: 'v=0'})", [b["peerId"]]
        )
        # The room pages' own mesh peers may offer to these extra connections too: pick a's signal.
        got = await page_b.wait_for_function(
            "from => window.heard.find(e => e.type === 'signal' && e.detail.from === from)?.detail",
            arg=a["peerId"],
            timeout=10_000,
        )
        assert await got.json_value() == {"from": a["peerId"], "kind": "offer", "data": {"type": "offer", "sdp": "v=0"}}

        await page_b.evaluate("() => window.conn.updateStatus({state: 'busy', tok_s: 77})")
        await page_a.wait_for_function(
            "id => window.conn.peers.some(p => p.peer_id === id && p.state === 'busy' && p.tok_s === 77)",
            arg=b["peerId"], timeout=10_000,
        )
        await page_b.evaluate("() => window.conn.leave()")
        await page_a.wait_for_function(
            "id => window.heard.some(e => e.type === 'peer_left' && e.detail.peer_ids.includes(id))",
            arg=b["peerId"], timeout=10_000,
        )
        assert not await page_a.evaluate("id => window.conn.peers.some(p => p.peer_id === id)", b["peerId"])
    finally:
        for page in pages:
            await page.context.close()


async def test_connect_room_rejects_private_room_for_non_member(live_server: LiveServer, page) -> None:
    owner, stranger = await sign_up(live_server.url), await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, "browser secret", private=True)
    await open_room(page, live_server, stranger, "global")
    message = await page.evaluate(
        """async (slug) => {
          const { connectRoom } = await import("/static/js/signaling.js");
          try { await connectRoom(slug); return "joined"; } catch (err) { return err.message; }
        }""",
        room["slug"],
    )
    assert "private" in message


async def test_peers_panel_updates_live_when_second_client_joins(live_server: LiveServer, page, peers) -> None:
    alice, bob = await sign_up(live_server.url), await sign_up(live_server.url)
    room = await create_room(live_server.url, alice, "live panel", private=False)
    await open_room(page, live_server, alice, room["slug"])
    panel = page.get_by_test_id("peers")
    await panel.get_by_test_id("peer").first.wait_for(timeout=10_000)  # the page joined by itself

    other = peers()
    await other.connect(live_server.url, token=bob.token)
    await other.join(room["slug"], backend="webgpu", models_warm=["tiny-gpt2"])
    row = panel.locator(f'[data-testid="peer"][data-peer-id="{other.peer_id}"]')
    await row.wait_for(timeout=10_000)  # no reload: the socket event made htmx fetch the fragment
    assert bob.username in await row.inner_text()
    assert "WebGPU" in await row.inner_text()

    await other.emit("status", {"state": "busy", "backend": "webgpu", "models_warm": ["tiny-gpt2"], "tok_s": 321.0})
    await row.locator(".state-busy").wait_for(timeout=10_000)
    assert "321.0 tok/s" in await row.inner_text()

    await other.close()
    await row.wait_for(state="detached", timeout=10_000)


async def test_connect_room_signed_out_rejects_with_the_reason(live_server: LiveServer, page) -> None:
    await open_room(page, live_server, await sign_up(live_server.url), "global")
    await page.context.clear_cookies()  # signed out elsewhere, or the session expired
    message = await page.evaluate(
        """async () => {
          const { connectRoom } = await import("/static/js/signaling.js");
          try { await connectRoom("global"); return "joined"; } catch (err) { return err.message; }
        }"""
    )
    assert "Sign in first" in message


async def test_signals_that_come_before_any_listener_reach_the_first_one(
    live_server: LiveServer, page, peers
) -> None:
    alice, bob = await sign_up(live_server.url), await sign_up(live_server.url)
    room = await create_room(live_server.url, alice, "early signals", private=False)
    await open_room(page, live_server, alice, room["slug"])
    own = await page.evaluate(
        """async (slug) => {
          const { connectRoom } = await import("/static/js/signaling.js");
          window.conn = await connectRoom(slug, { capabilities: { backend: "wasm" } });
          return window.conn.peerId;
        }""",
        room["slug"],
    )
    other = peers()
    await other.connect(live_server.url, token=bob.token)
    await other.join(room["slug"])
    # An offer and a candidate arrive while nobody on the page listens yet (as before a mesh attaches).
    await other.emit("signal", {"to": own, "kind": "offer", "data": {"type": "offer", "sdp": "v=0"}})
    await other.emit("signal", {"to": own, "kind": "candidate", "data": {"candidate": "c1"}})
    await page.wait_for_timeout(500)
    heard = await page.evaluate(
        """(from) => new Promise((resolve) => {
          const heard = [];
          window.conn.addEventListener("signal", (e) => {
            // The room page's own mesh peer offers to this extra connection too, later: not those.
            if (e.detail.from === from) heard.push(e.detail.kind);
            if (heard.length === 2) resolve(heard);
          });
          setTimeout(() => resolve(heard), 15000);
        })""",
        other.peer_id,
    )
    assert heard == ["offer", "candidate"]
