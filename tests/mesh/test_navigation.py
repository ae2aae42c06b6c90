"""A tab that serves someone else's job keeps serving it while its person walks the app: links swap
the page (hx-boost), and the peer (socket, data channels, model, the job) stays."""

from __future__ import annotations

import re

import pytest
from conftest import LiveServer
from playwright.async_api import expect
from support.accounts import create_room, sign_up
from support.pages import Dock

from mesh.conftest import OpenPeer, first_worker, room_name

pytestmark = pytest.mark.browser

PROMPT = "You may"
TOKENS = 250
MS_PER_TOKEN = 60  # bob streams for about 15 s (support.browser.SLOW_TOKENS)


async def test_serving_tab_goes_to_history_and_back_and_the_job_finishes(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice = await open_peer(room["slug"], owner)
    bob = await open_peer(room["slug"], ms_per_token=MS_PER_TOKEN)
    await alice.wait_for_links(1)
    await bob.wait_for_links(1)
    bob_id = await bob.own_peer_id()
    alice_id = await alice.own_peer_id()
    await bob.mark_document()

    await alice.run(PROMPT, TOKENS, "mesh")
    worker_id, _ = await first_worker({bob_id: bob})
    assert worker_id == bob_id

    dock = Dock(bob.page)
    await bob.follow("History")
    await expect(bob.page).to_have_url(f"{live_server.url}/jobs")
    await expect(dock.work).to_contain_text(f"Serving {owner.username}'s job")
    # The job goes on streaming to alice while bob reads his history.
    shown = len(await alice.output.text_content() or "")
    await expect(alice.output).not_to_have_text(re.compile(rf"^[\s\S]{{0,{shown}}}$"))
    await bob.follow("Settings")
    await dock.room.click()
    await expect(bob.page).to_have_url(f"{live_server.url}/rooms/{room['slug']}")
    # Back on the room page, bob's page shows what it does for alice, as it happens.
    await expect(bob.serving).to_contain_text(f"for {owner.username}")
    await expect(bob.serving).to_have_attribute("data-state", re.compile("running|done"))

    job = await alice.recorded_job(timeout=60_000)
    assert job["status"] == "succeeded"
    assert job["workers"] == [bob_id] and job["attempts"] == 1
    assert job["token_count"] == TOKENS
    assert job["output"] == await alice.output.text_content()
    await expect(bob.serving).to_have_attribute("data-state", "done")
    await expect(bob.serving).to_contain_text(f"{TOKENS} tokens")
    # Bob's tab was one document and one peer throughout: no reload, no second socket, no relink.
    assert await bob.same_document()
    assert await bob.own_peer_id() == bob_id
    assert await dock.peer_id() == bob_id
    await expect(bob.peer_row(alice_id)).to_have_attribute("data-link", "open")
    assert not [line for line in alice.console + bob.console if line.startswith("pageerror")]
