"""Sharing between real room pages: a page whose user does not share is never offered a job, the
requester says why it ran the job itself, and the switch on the room page turns serving on; a
hidden tab pauses (the room sees why) and serves again once it is visible."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from conftest import LiveServer
from openai import AsyncOpenAI
from playwright.async_api import Browser, expect
from support.accounts import Account, create_room, sign_up
from support.browser import new_context
from support.pages import MODEL, RoomPage

from mesh.conftest import room_name

pytestmark = pytest.mark.browser

PROMPT = "You may"
# Every data-channel message a page receives, by type, before mesh.js sees it: proof that a page
# was never offered a job, not just that it declined one.
RECORD_MESSAGES = """
const create = RTCPeerConnection.prototype.createDataChannel;
RTCPeerConnection.prototype.createDataChannel = function (...args) {
  const channel = create.apply(this, args);
  channel.addEventListener("message", (e) => {
    try { (window.meshReceived ??= []).push(JSON.parse(e.data).type); } catch {}
  });
  return channel;
};
"""
# Headless Chromium keeps every page "visible": a tab brought to the front over it and a window
# minimised through CDP both left document.visibilityState at "visible" here. So the test sets
# what the browser would report and fires the event the browser would fire; pause.js cannot tell.
SET_VISIBILITY = """(state) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => state === "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


async def open_page(browser: Browser, live_server: LiveServer, slug: str, account: Account, contexts: list) -> RoomPage:
    context = await new_context(browser, live_server.url, account.session_cookie)
    contexts.append(context)
    await context.add_init_script(RECORD_MESSAGES)
    page = await context.new_page()
    peer = RoomPage(page, live_server.url, account=account)
    page.on("pageerror", lambda error: peer.console.append(f"pageerror: {error}"))
    await peer.open(slug)
    await expect(peer.backend).to_contain_text(f"warm: {MODEL}", timeout=60_000)
    return peer


async def received(peer: RoomPage) -> list[str]:
    return await peer.page.evaluate("() => window.meshReceived ?? []")


@pytest.fixture
async def contexts():
    made: list = []
    yield made
    for context in made:
        await context.close()


async def test_a_page_that_does_not_share_is_never_offered_a_job_until_it_turns_sharing_on(
    live_server: LiveServer, browser: Browser, contexts: list
) -> None:
    owner, bob_account = await sign_up(live_server.url), await sign_up(live_server.url, share=False)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice = await open_page(browser, live_server, room["slug"], owner, contexts)
    bob = await open_page(browser, live_server, room["slug"], bob_account, contexts)
    await alice.wait_for_links(1)
    bob_id = await bob.own_peer_id()
    share = bob.page.get_by_test_id("share")
    await expect(share).not_to_be_checked()
    await expect(bob.backend).to_have_attribute("data-state", "paused")
    # The room sees why bob takes no jobs.
    await expect(alice.peer_row(bob_id).get_by_test_id("peer-paused")).to_have_text("not sharing")

    meshed = await alice.run_and_wait(PROMPT, 16, "mesh")
    assert meshed["status"] == "succeeded" and meshed["workers"] == ["local"]  # ran in alice's browser
    await expect(alice.flash).to_contain_text(f"{bob_account.username}'s browser: sharing is off")
    assert "job_offer" not in await received(bob)
    await expect(bob.serving).to_be_hidden()

    # Bob turns sharing on from the room page: the server keeps it, the room sees him serve.
    await share.check()
    await expect(bob.sharing_message).to_have_text("Saved.")
    await expect(bob.backend).to_have_attribute("data-state", "idle")
    await expect(alice.peer_row(bob_id).get_by_test_id("peer-paused")).to_have_count(0)
    meshed = await alice.run_and_wait(PROMPT, 16, "mesh")
    assert meshed["workers"] == [bob_id]
    assert "job_offer" in await received(bob)
    assert not [line for line in alice.console + bob.console if line.startswith("pageerror")]


async def test_a_hidden_tab_pauses_and_serves_again_once_visible(
    live_server: LiveServer, browser: Browser, contexts: list
) -> None:
    owner, bob_account = await sign_up(live_server.url), await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice = await open_page(browser, live_server, room["slug"], owner, contexts)
    bob = await open_page(browser, live_server, room["slug"], bob_account, contexts)
    await alice.wait_for_links(1)
    bob_id = await bob.own_peer_id()

    await bob.page.evaluate(SET_VISIBILITY, "hidden")
    await expect(alice.peer_row(bob_id).get_by_test_id("peer-paused")).to_have_text("paused — tab hidden")
    await expect(bob.backend).to_have_attribute("data-state", "paused")
    before = len(await received(bob))
    meshed = await alice.run_and_wait(PROMPT, 16, "mesh")
    assert meshed["workers"] == ["local"]
    await expect(alice.flash).to_contain_text(f"{bob_account.username}'s browser: paused, its tab is hidden")
    assert "job_offer" not in (await received(bob))[before:]

    await bob.page.evaluate(SET_VISIBILITY, "visible")
    await expect(alice.peer_row(bob_id).get_by_test_id("peer-paused")).to_have_count(0)
    await expect(alice.peer_row(bob_id)).not_to_contain_text(re.compile("paused"))
    meshed = await alice.run_and_wait(PROMPT, 16, "mesh")
    assert meshed["workers"] == [bob_id]


async def test_an_api_job_waits_for_a_page_that_shares_instead_of_running_on_one_that_does_not(
    live_server: LiveServer, browser: Browser, contexts: list
) -> None:
    bob_account = await sign_up(live_server.url, share=False)
    room = await create_room(live_server.url, bob_account, room_name(), private=False)
    bob = await open_page(browser, live_server, room["slug"], bob_account, contexts)
    bob_id = await bob.own_peer_id()
    client = AsyncOpenAI(base_url=f"{live_server.url}/api/rooms/{room['slug']}/v1", api_key=bob_account.token, max_retries=0, timeout=60)

    request = asyncio.create_task(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8))
    # The request waits for a peer (GATEWAY_QUEUE_WAIT); the scheduler looks again every half
    # second, and never hands it to bob's paused page meanwhile.
    await asyncio.sleep(3)
    assert not request.done()
    await expect(bob.serving).to_be_hidden()

    await bob.page.get_by_test_id("share").check()
    done = await request
    assert done.choices[0].text
    await expect(bob.serving).to_have_attribute("data-state", "done")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        jobs = (await http.get("/api/jobs", params={"room": room["slug"]}, headers={"Authorization": f"Bearer {bob_account.token}"})).json()["jobs"]
    assert [(j["workers"], j["attempts"]) for j in jobs if j["mode"] == "api"] == [([bob_id], 1)]
