"""The mesh in real headless Chromium, several peers on one machine over loopback ICE: a job runs on
another peer and streams back, fails over when its worker's page closes, can be cancelled, and
peers of a private room never meet peers of another room."""

from __future__ import annotations

import asyncio

import pytest
from conftest import LiveServer
from playwright.async_api import expect
from support.accounts import create_room, sign_up

from mesh.conftest import OpenPeer, first_worker, room_name

pytestmark = pytest.mark.browser

PROMPT = "You may"


async def test_mesh_job_runs_on_other_peer_and_streams_back(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice, bob = await asyncio.gather(open_peer(room["slug"], owner), open_peer(room["slug"]))
    await alice.wait_for_links(1)
    await bob.wait_for_links(1)
    bob_id = await bob.own_peer_id()

    local = await alice.run_and_wait(PROMPT, 48, "local")
    meshed = await alice.run_and_wait(PROMPT, 48, "mesh")

    assert meshed["status"] == "succeeded" and meshed["mode"] == "mesh"
    assert (
        meshed["workers"] == [bob_id]
        and meshed["worker_peer"] == bob_id
        and meshed["attempts"] == 1
    )
    # Greedy decoding on the same model: the other browser wrote exactly what this one would have.
    assert meshed["output"] == local["output"] and len(local["output"].split()) >= 10
    assert meshed["token_count"] == local["token_count"]
    await expect(alice.output).to_have_text(local["output"])
    await expect(alice.metrics).to_contain_text(f"ran on {bob.account.username}'s browser")
    # The worker's page says what it ran for whom.
    await expect(bob.serving).to_have_attribute("data-state", "done")
    await expect(bob.serving).to_contain_text(f"for {owner.username}")
    assert not [line for line in alice.console + bob.console if line.startswith("pageerror")]


async def test_closing_worker_mid_job_fails_over_without_lost_or_repeated_text(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice, bob, carol = await asyncio.gather(
        *(open_peer(room["slug"], account) for account in (owner, None, None))
    )
    for peer in (alice, bob, carol):
        await peer.wait_for_links(2)
    ids = {await peer.own_peer_id(): peer for peer in (bob, carol)}
    local = await alice.run_and_wait(PROMPT, 200, "local")
    assert local["token_count"] > 100, local  # long enough to be cut in the middle

    await alice.page.evaluate(RECORD_METRICS)
    await alice.run(PROMPT, 200, "mesh")
    worker_id, worker = await first_worker(ids)
    other_id = next(peer_id for peer_id in ids if peer_id != worker_id)
    await expect(alice.output).not_to_be_empty()
    await expect(alice.metrics).to_have_text(f"Running on {worker.account.username}'s browser…")
    await worker.page.close()  # mid-answer: the tab is gone, its data channel with it

    job = await alice.recorded_job()
    assert job["status"] == "succeeded"
    assert job["output"] == local["output"]  # nothing lost, nothing said twice
    assert job["token_count"] == local["token_count"]
    assert job["attempts"] == 2 and job["workers"] in ([worker_id, other_id], [worker_id, "local"])
    await expect(alice.output).to_have_text(local["output"])
    await expect(alice.metrics).to_contain_text(f"{worker.account.username}'s browser dropped out")
    # The page said where it went on the moment the worker dropped out, before the answer was over.
    dropped = f"{worker.account.username}'s browser dropped out"
    continuing = (
        f"{dropped}; continuing in this browser…"
        if job["workers"][1] == "local"
        else f"{dropped}; continuing on {ids[other_id].account.username}'s browser…"
    )
    said = [(text, length) for text, length in await alice.page.evaluate("window.metricsSaid") if text]
    texts = [text for text, _ in said]
    assert texts[:2] == [f"Running on {worker.account.username}'s browser…", continuing], said
    assert f"{dropped}; " in texts[-1] and texts[-1].endswith("recorded in history"), said
    assert said[1][1] < len(local["output"]), said


# Keeps each text the metrics line shows, with how much of the answer was out by then.
RECORD_METRICS = """() => {
  const metrics = document.querySelector('[data-testid="metrics"]');
  const output = document.querySelector('[data-testid="output"]');
  window.metricsSaid = [];
  new MutationObserver(() => {
    const text = metrics.textContent;
    if (text !== window.metricsSaid.at(-1)?.[0]) window.metricsSaid.push([text, output.textContent.length]);
  }).observe(metrics, { childList: true, characterData: true, subtree: true });
}"""


# Clicks Cancel the moment the first words appear, as an impatient person would.
CANCEL_ON_FIRST_WORDS = """() => {
  const output = document.querySelector('[data-testid="output"]');
  const observer = new MutationObserver(() => {
    if (output.textContent.trim()) {
      observer.disconnect();
      document.querySelector('[data-testid="cancel"]').click();
    }
  });
  observer.observe(output, { childList: true, characterData: true, subtree: true });
}"""


async def test_cancel_reaches_the_worker_and_stops_it(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice, bob = await asyncio.gather(open_peer(room["slug"], owner), open_peer(room["slug"]))
    await alice.wait_for_links(1)

    await alice.page.evaluate(CANCEL_ON_FIRST_WORDS)
    await alice.run(PROMPT, 200, "mesh")
    job = await alice.recorded_job()

    assert job["status"] == "cancelled" and 0 < job["token_count"] < 200
    await expect(alice.metrics).to_contain_text("cancelled")
    await expect(bob.serving).to_have_attribute("data-state", "cancelled")
    await expect(bob.serving).to_contain_text(f"{owner.username} cancelled their job")
    stopped_after = int((await bob.serving.text_content() or "").rsplit("after ", 1)[1].split()[0])
    assert stopped_after < 200  # the worker stopped, it did not just stop sending
    await expect(bob.page.get_by_test_id("backend")).to_have_attribute("data-state", "idle")


async def test_private_room_peers_never_link_to_other_rooms(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner, outsider = await sign_up(live_server.url), await sign_up(live_server.url)
    private = await create_room(live_server.url, owner, room_name(), private=True)
    public = await create_room(live_server.url, outsider, room_name(), private=False)
    first, second, carol = await asyncio.gather(
        open_peer(private["slug"], owner),
        open_peer(private["slug"], owner),
        open_peer(public["slug"], outsider),
    )
    await first.wait_for_links(1)
    await second.wait_for_links(1)
    carol_id = await carol.own_peer_id()

    for peer in (first, second):
        await expect(peer.page.locator('[data-testid="peer"]')).to_have_count(2)
        await expect(peer.peer_row(carol_id)).to_have_count(0)
    await expect(carol.page.locator('[data-testid="peer"]')).to_have_count(1)  # herself only
    await expect(carol.linked_rows).to_have_count(0)

    # Asked to use the mesh, carol's page finds nobody and runs the prompt itself.
    job = await carol.run_and_wait(PROMPT, 8, "mesh")
    assert job["status"] == "succeeded" and job["workers"] == ["local"]
    await expect(carol.flash).to_contain_text("ran in this browser")
