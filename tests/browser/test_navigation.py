"""The peer outlives the page: links swap the page (hx-boost), so a run streams on while its person
looks at the history, the tab stays one peer on one socket, and the dock on every page says so.
Closing the tab mid-run records what the run had."""

from __future__ import annotations

import asyncio
import re

import pytest
from conftest import LiveServer
from playwright.async_api import Page, expect
from support.accounts import create_room, room_peers, sign_up
from support.browser import sign_in, slow_tokens
from support.pages import MODEL, Dock, HistoryPage, RoomsPage, open_room

pytestmark = pytest.mark.browser

PROMPT = "You may"
TOKENS = 250  # the tiny model's context is 256 tokens, its prompt two of them
# About 15 s a run: time enough to walk through three pages and back while it streams.
MS_PER_TOKEN = 60


async def jobs_of(page: Page, server: LiveServer) -> list[dict]:
    response = await page.context.request.get(f"{server.url}/api/jobs")
    assert response.ok, await response.text()
    return (await response.json())["jobs"]


async def the_job(page: Page, server: LiveServer, status: str | tuple[str, ...], timeout: float = 30.0) -> dict:
    """The account's one job, once it has `status` (one of them)."""
    wanted = (status,) if isinstance(status, str) else status
    async with asyncio.timeout(timeout):
        while True:
            jobs = await jobs_of(page, server)
            if jobs and jobs[0]["status"] in wanted:
                assert len(jobs) == 1, jobs
                return jobs[0]
            await asyncio.sleep(0.1)


async def test_a_run_streams_on_while_its_person_walks_the_app_and_back(live_server: LiveServer, page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await slow_tokens(page.context, MS_PER_TOKEN)
    room = await open_room(page, live_server.url)
    dock = Dock(page)
    peer_id = await room.own_peer_id()
    assert await dock.peer_id() == peer_id
    await room.mark_document()

    await room.run(PROMPT, TOKENS)
    await expect(room.output).not_to_have_text("")
    # The record opens a second into a run: then the history has it, running.
    job = await the_job(page, live_server, "running")

    await room.follow("History")
    history = HistoryPage(page, live_server.url)
    await expect(page).to_have_url(f"{live_server.url}/jobs")
    await expect(history.heading).to_have_text("History")
    await expect(dock.work).to_contain_text("Running your prompt")
    await history.open_job(job["id"])
    await expect(page.get_by_test_id("job-status")).to_have_text("running")
    # From the job page back to its room, by its link.
    await page.locator("main").get_by_role("link", name="Global", exact=True).click()
    await expect(page).to_have_url(f"{live_server.url}/rooms/global")
    # The room page shows the run still going, with the text it had and more coming.
    await expect(room.cancel).to_be_enabled()
    shown = len(await room.output.text_content() or "")
    assert shown > 0
    await expect(room.output).not_to_have_text(re.compile(rf"^[\s\S]{{0,{shown}}}$"))
    await expect(room.model_picker).to_have_value(MODEL)
    await expect(page.get_by_test_id("prompt")).to_have_value(PROMPT)

    # Back and forward through the browser's history: the job page, the history, and back again.
    await page.go_back()
    await expect(page).to_have_url(f"{live_server.url}/jobs/{job['id']}")
    await page.go_back()
    await expect(page).to_have_url(f"{live_server.url}/jobs")
    await expect(history.row(job["id"])).to_be_visible()
    await page.go_forward()
    await page.go_forward()
    await expect(page).to_have_url(f"{live_server.url}/rooms/global")

    recorded = await room.recorded_job(timeout=60_000)
    assert recorded["id"] == job["id"]
    assert recorded["status"] == "succeeded"
    assert recorded["token_count"] == TOKENS
    assert recorded["output"] == await room.output.text_content()
    assert recorded["attempts"] == 1 and recorded["workers"] == ["local"]
    assert recorded["requester_peer"] == peer_id
    # One document and one peer throughout: no reload, no second socket.
    assert await room.same_document()
    assert await room.own_peer_id() == peer_id
    assert await dock.peer_id() == peer_id
    peers = await room_peers(live_server.url, room.account, "global")
    assert [p["peer_id"] for p in peers if p["username"] == room.account.username] == [peer_id]
    assert errors == []


async def test_closing_the_tab_mid_run_records_the_text_so_far(live_server: LiveServer, page: Page) -> None:
    await slow_tokens(page.context, MS_PER_TOKEN)
    room = await open_room(page, live_server.url)
    await room.run(PROMPT, TOKENS)
    await the_job(page, live_server, "running")
    await expect(room.output).to_have_text(re.compile(r"\S{10}"))
    shown = await room.output.text_content() or ""

    await page.close()
    job = await the_job(page, live_server, ("cancelled", "failed"))
    assert job["status"] == "cancelled"
    assert 0 < job["token_count"] < TOKENS
    # What the page had when it closed: at least what the test saw, and a prefix of the whole answer.
    assert job["output"].startswith(shown) and len(job["output"]) >= len(shown)
    assert "closed" in job["error"]


async def test_the_dock_follows_the_peer_across_pages_and_leaves(live_server: LiveServer, page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    account = await sign_up(live_server.url)
    other = await create_room(live_server.url, account, "Second bench", private=False)
    room = await open_room(page, live_server.url, account=account)
    dock = Dock(page)
    await expect(dock.root).to_be_visible()
    await expect(dock.room).to_have_text("Global")
    await expect(dock.state).to_have_text("idle")
    await expect(dock.root).to_contain_text(f"warm: {MODEL}")
    peer_id = await dock.peer_id()
    await room.mark_document()

    # A direct load of the history renders the whole page on the server: the dock is there, empty
    # (a new document is no peer yet).
    response = await page.request.get(f"{live_server.url}/jobs")
    html = await response.text()
    assert html.lstrip().lower().startswith("<!doctype html>") and 'data-testid="dock"' in html

    await room.follow("Settings")
    await expect(page).to_have_url(f"{live_server.url}/settings")
    await expect(dock.room).to_have_attribute("href", "/rooms/global")
    assert await dock.peer_id() == peer_id

    # Another room: the tab leaves the first room's mesh and joins the second.
    await page.goto(f"{live_server.url}/rooms")  # a full load too: a new document, a new peer
    rooms = RoomsPage(page, live_server.url)
    await rooms.enter(other["slug"])
    await expect(dock.room).to_have_text("Second bench")
    await room.mark_document()
    second = await dock.peer_id()
    await room.follow("Rooms")
    await rooms.enter("global")
    await expect(dock.room).to_have_text("Global")
    await expect(dock.root).not_to_have_attribute("data-peer-id", second)
    async with asyncio.timeout(10):
        while any(p["peer_id"] == second for p in await room_peers(live_server.url, account, other["slug"])):
            await asyncio.sleep(0.1)
    assert await room.same_document()

    # Leave, from the history page: the dock goes and the room no longer lists this tab.
    await room.follow("History")
    joined = await dock.peer_id()
    await dock.leave.click()
    await expect(dock.root).to_be_hidden()
    async with asyncio.timeout(10):
        while any(p["peer_id"] == joined for p in await room_peers(live_server.url, account, "global")):
            await asyncio.sleep(0.1)
    # Opening a room again makes the tab a peer again, on the same document.
    await room.follow("Rooms")
    await rooms.enter("global")
    await expect(dock.root).to_be_visible()
    await expect(dock.root).not_to_have_attribute("data-peer-id", joined)
    assert await room.same_document()
    assert errors == []


async def test_another_room_waits_for_the_run_to_finish_then_joins(live_server: LiveServer, page: Page) -> None:
    await slow_tokens(page.context, MS_PER_TOKEN)
    account = await sign_up(live_server.url)
    other = await create_room(live_server.url, account, "Next bench", private=False)
    room = await open_room(page, live_server.url, account=account)
    dock = Dock(page)
    first = await dock.peer_id()
    await room.run(PROMPT, TOKENS)
    await the_job(page, live_server, "running")

    await room.follow("Rooms")
    await RoomsPage(page, live_server.url).enter(other["slug"])
    # The run finishes in the room it started in; this page says so, and cannot run a prompt yet.
    await expect(room.flash).to_contain_text("finishes there first")
    await expect(page.get_by_test_id("run")).to_be_disabled()
    await expect(dock.room).to_have_text("Global")
    await expect(dock.work).to_contain_text("joins Next bench next")
    assert await dock.peer_id() == first

    job = await the_job(page, live_server, "succeeded", timeout=60)
    assert job["token_count"] == TOKENS and job["room"] == "global"
    await expect(dock.room).to_have_text("Next bench")
    await expect(dock.root).not_to_have_attribute("data-peer-id", first)
    await expect(page.get_by_test_id("run")).to_be_enabled()
    await expect(room.flash).to_have_text("")


async def test_a_refused_form_keeps_the_address_of_its_page(live_server: LiveServer, page: Page) -> None:
    account = await sign_up(live_server.url)
    await sign_in(page.context, live_server.url, account.session_cookie)
    await page.goto(f"{live_server.url}/rooms")
    await (await RoomsPage(page, live_server.url).create_room("Addressed")).open_settings()
    settings_url = page.url
    await page.get_by_label("Room name").fill("")
    await page.get_by_role("button", name="Rename").click()
    await expect(page.get_by_text("Give the room a name.")).to_be_visible()
    # Not the form's action (POST only): a reload would have asked for it and got a 405.
    assert page.url == settings_url
    response = await page.reload()
    assert response is not None and response.status == 200
    await expect(page.get_by_label("Room name")).to_have_value("Addressed")


async def test_a_part_of_a_page_that_fails_becomes_a_notice_not_a_page_in_the_page(
    live_server: LiveServer, page: Page
) -> None:
    account = await sign_up(live_server.url)
    await sign_in(page.context, live_server.url, account.session_cookie)
    await page.goto(f"{live_server.url}/jobs")
    status = page.get_by_label("Status")
    # A filter value the server refuses (400): the table's place gets the reason.
    await status.evaluate("(select) => select.append(new Option('bogus', 'bogus'))")
    await status.select_option("bogus")
    await expect(page.get_by_test_id("flash")).to_contain_text("status")
    await expect(page.get_by_role("navigation", name="Main")).to_have_count(1)
    await expect(page.locator(".status-code")).to_have_count(0)

    # Signed out meanwhile (another tab): said in place, with the way back; the tab stays (it may be
    # running a prompt).
    await page.reload()
    await page.context.clear_cookies()
    await page.get_by_label("Status").select_option("failed")
    await expect(page.get_by_test_id("flash")).to_contain_text("You are signed out.")
    await expect(page).to_have_url(f"{live_server.url}/jobs")
    await page.get_by_role("link", name="Sign in again").click()
    await expect(page).to_have_url(f"{live_server.url}/login?next=/jobs")
