"""The room page shows the mesh as it works, in real headless Chromium: a peer that starts serving
this page turns busy here before its first token shows (by the order things happen on the page,
not by a clock), the topology drawing gets the link's round trip, and the stats page counts the
job for the peer that ran it."""

from __future__ import annotations

import asyncio
import re

import pytest
from conftest import LiveServer
from playwright.async_api import expect
from support.accounts import create_room, sign_up

from mesh.conftest import OpenPeer, room_name

pytestmark = pytest.mark.browser

PROMPT = "You may"
# Records, in the order the page changed, the moments that matter: the worker's row turning busy
# and the first text in the output.
WATCH = """(workerId) => {
  window.meshOrder = [];
  const output = document.getElementById("output");
  const seen = new Set();
  const note = (what) => { if (!seen.has(what)) { seen.add(what); window.meshOrder.push(what); } };
  new MutationObserver((records) => {
    for (const r of records) {
      const row = r.target instanceof Element ? r.target.closest('[data-testid="peer"]') : null;
      if (r.type === "attributes" && row?.dataset.peerId === workerId && row.dataset.state === "busy") note("busy");
      if (output.contains(r.target) && output.textContent.length > 0) note("token");
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["data-state"] });
}"""


async def test_serving_peer_turns_busy_before_the_first_token_and_the_drawing_shows_the_link(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice, bob = await asyncio.gather(open_peer(room["slug"], owner), open_peer(room["slug"]))
    await alice.wait_for_links(1)
    await bob.wait_for_links(1)
    bob_id = await bob.own_peer_id()
    bob_row = alice.peer_row(bob_id)
    await expect(bob_row).to_have_attribute("data-state", "idle", timeout=20_000)

    await alice.page.evaluate(WATCH, bob_id)
    job = await alice.run_and_wait(PROMPT, 32, "mesh")

    assert job["worker_peer"] == bob_id and job["status"] == "succeeded"
    assert await alice.page.evaluate("window.meshOrder") == ["busy", "token"]
    await expect(bob_row).to_have_attribute("data-state", "idle", timeout=20_000)

    # Both pages report the link's round trip; the room's drawing shows it, and says it in words.
    alice_id = await alice.own_peer_id()
    link = alice.page.locator(
        f'[data-testid="topology-link"][data-a="{min(alice_id, bob_id)}"][data-b="{max(alice_id, bob_id)}"]'
    )
    await expect(link).to_have_attribute("data-rtt", re.compile(r"^\d"), timeout=30_000)
    await expect(alice.page.get_by_test_id("topology-text")).to_contain_text(" ms")
    await expect(alice.page.locator('[data-testid="topology-peer"].self')).to_have_attribute(
        "data-peer-id", alice_id
    )

    stats = await alice.page.request.get(
        f"{live_server.url}/api/rooms/{room['slug']}/stats?period=1h"
    )
    by_peer = {p["peer_id"]: p for p in (await stats.json())["peers"]}
    assert by_peer[bob_id]["jobs"] == 1 and by_peer[bob_id]["tokens"] == job["token_count"]
    assert not [line for line in alice.console + bob.console if line.startswith("pageerror")]
