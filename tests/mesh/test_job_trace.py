"""Job traces from real pages: a mesh job whose worker's tab closes mid-answer keeps both attempts and
why the first was given up, and its page draws each attempt in its own colour; a very short run shows
no absurd speed, on the room page and in the history alike."""

from __future__ import annotations

import asyncio

import pytest
from conftest import LiveServer
from playwright.async_api import Page, expect
from support.accounts import create_room, sign_up

from mesh.conftest import OpenPeer, first_worker, room_name

pytestmark = pytest.mark.browser

PROMPT = "You may"


async def trace_of(page: Page, base_url: str, job_id: str) -> dict:
    response = await page.request.get(f"{base_url}/api/jobs/{job_id}/trace")
    assert response.ok, await response.text()
    return await response.json()


async def test_failover_is_traced_and_drawn_in_two_colours(
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

    await alice.run(PROMPT, 200, "mesh")
    worker_id, worker = await first_worker(ids)
    await expect(alice.output).not_to_be_empty()
    await worker.page.close()  # mid-answer: the tab is gone, its data channel with it

    job = await alice.recorded_job()
    assert job["status"] == "succeeded" and job["attempts"] == 2
    events = (await trace_of(alice.page, live_server.url, job["id"]))["events"]
    kinds = [event["kind"] for event in events]
    assert kinds[0] == "created" and kinds[-1] == "done"
    assert [event["t"] for event in events] == sorted(event["t"] for event in events)
    # Both peers were offered it before the first attempt, and each answered.
    first_dispatch = kinds.index("dispatched")
    offered = {event["peer"] for event in events[:first_dispatch] if event["kind"] == "offered"}
    answered = {
        event["peer"]
        for event in events[:first_dispatch]
        if event["kind"] in ("accepted", "declined")
    }
    assert offered == answered == set(ids)
    dispatches = [event for event in events if event["kind"] == "dispatched"]
    assert [event["attempt"] for event in dispatches] == [1, 2]
    assert dispatches[0]["peer"] == worker_id
    [failover] = [event for event in events if event["kind"] == "failover"]
    assert (
        failover["attempt"] == 1
        and failover["peer"] == worker_id
        and failover["reason"] == "closed"
    )
    assert dispatches[0]["t"] < failover["t"] <= dispatches[1]["t"]
    # The first attempt had streamed before its worker went: a first token on either side of the failover.
    assert [event["attempt"] for event in events if event["kind"] == "first_token"] == [1, 2]
    assert events[-1]["tokens"] == job["token_count"]

    page = alice.page
    await page.goto(f"{live_server.url}/jobs/{job['id']}")
    timeline = page.get_by_test_id("timeline")
    rows = timeline.locator(".timeline-row")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text(f"Attempt 1 · {worker.account.username}'s browser")
    await expect(rows.nth(0)).to_contain_text("failed over: closed")
    await expect(rows.nth(1)).to_contain_text("finished")
    colours = [
        await rows.nth(i)
        .locator("rect.phase-decode")
        .evaluate("(bar) => getComputedStyle(bar).fill")
        for i in range(2)
    ]
    assert colours[0] != colours[1] and all(colour.startswith("rgb(") for colour in colours), (
        colours
    )
    await expect(
        timeline.get_by_role(
            "cell", name=f"Failed over from {worker.account.username}'s browser: closed"
        )
    ).to_be_visible()
    await expect(timeline.locator("line.ttft-mark")).to_have_count(1)


async def test_eight_token_run_shows_no_absurd_speed(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice = await open_peer(room["slug"], owner)

    job = await alice.run_and_wait(PROMPT, 8, "local")
    assert job["status"] == "succeeded" and job["token_count"] == 8
    shown = await alice.metrics.get_attribute("data-tok-s")
    # An 8-token run is over in a few milliseconds here: either the page timed enough of it to say
    # a speed, and the history says the same one, or both say it was too short to measure.
    if job["tokens_per_s"] is None:
        assert shown == "" and job["decode_ms"] is not None
        assert job["decode_ms"] < 50 or job["decode_tokens"] < 4
        await expect(alice.metrics).to_contain_text("too short to measure a speed")
        said_in_history = "short"
    else:
        assert job["decode_ms"] >= 50 and job["decode_tokens"] >= 4
        assert job["tokens_per_s"] == pytest.approx(float(shown or 0), rel=1e-6)
        assert job["tokens_per_s"] == pytest.approx(job["decode_tokens"] * 1000 / job["decode_ms"])
        said_in_history = f"{job['tokens_per_s']:.1f}"

    await alice.page.goto(f"{live_server.url}/jobs")
    row = alice.page.locator(f'[data-testid="job-row"][data-job-id="{job["id"]}"]')
    await expect(row).to_contain_text(said_in_history)

    # A local run's trace: the model was already warm in this page's worker, then one attempt here.
    events = (await trace_of(alice.page, live_server.url, job["id"]))["events"]
    assert [event["kind"] for event in events] == [
        "created",
        "load_started",
        "load_ready",
        "dispatched",
        "first_token",
        "done",
    ]
    assert events[2]["cached"] is True and "peer" not in events[3] and events[-1]["tokens"] == 8
