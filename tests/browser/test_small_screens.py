"""The app on a phone-sized screen (390 CSS pixels wide) in headless Chromium: no page scrolls
sideways, the history shows each job as a card, the room's prompt controls stay on one row and
its peers are one tap away instead of under the whole output. Each page's screenshot is saved
under the test's tmp_path, to look at."""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import LiveServer
from playwright.async_api import Browser, Page, expect
from support.accounts import Account, create_room, sign_up
from support.browser import PHONE_VIEWPORT, new_context
from support.pages import MODEL, RoomPage

pytestmark = pytest.mark.browser

LONG_PROMPT = (
    "A prompt that goes on for a while, with a_rather_long_unbroken_identifier_in_it, " * 3
)

# Elements whose right edge passes the viewport's: what to look at when a page scrolls sideways.
TOO_WIDE = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.body.querySelectorAll("*")]
    .filter((element) => element.getBoundingClientRect().right > width + 0.5)
    .slice(0, 5)
    .map((element) => `${element.tagName.toLowerCase()}${element.id ? "#" + element.id : ""}.${element.className}`);
}"""


async def record_jobs(server: LiveServer, account: Account, count: int, room: str = "global") -> list[str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {account.token}"}
        ids = []
        for _ in range(count):
            response = await http.post(
                "/api/jobs",
                json={"room": room, "model": MODEL, "prompt": LONG_PROMPT},
                headers=headers,
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        return ids


async def phone_page(browser: Browser, base_url: str, account: Account) -> Page:
    """A page of its own context, 390 pixels wide, signed in as `account`."""
    context = await new_context(browser, base_url, account.session_cookie, viewport=PHONE_VIEWPORT)
    return await context.new_page()


async def sideways_overflow(page: Page) -> tuple[int, int, list[str]] | None:
    """None when the page fits its width; otherwise its scroll width, its width and what sticks out."""
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    return None if scroll <= client else (scroll, client, await page.evaluate(TOO_WIDE))


async def test_no_page_scrolls_sideways_at_390px(
    live_server: LiveServer, browser: Browser, tmp_path
) -> None:
    base = live_server.url
    owner = await sign_up(base, "owner")
    visitor = await sign_up(base, "visitor")
    room = await create_room(
        base, owner, "A private room with a name long enough to wrap", private=True
    )
    job_ids = await record_jobs(live_server, owner, 3)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {owner.token}"}
    ) as http:
        invite_code = (await http.get(f"/api/rooms/{room['slug']}")).json()["invite_code"]

    anonymous = await new_context(browser, viewport=PHONE_VIEWPORT)
    as_owner = await new_context(browser, base, owner.session_cookie, viewport=PHONE_VIEWPORT)
    as_visitor = await new_context(browser, base, visitor.session_cookie, viewport=PHONE_VIEWPORT)
    heading = "main h1, main .status-code"
    pages = [
        ("login", anonymous, "/login", heading),
        ("register", anonymous, "/register", heading),
        ("rooms", as_owner, "/rooms", heading),
        ("room", as_owner, "/rooms/global", f'[data-testid="backend"]:has-text("warm: {MODEL}")'),
        ("private room", as_owner, f"/rooms/{room['slug']}", '[data-testid="invite-link"]'),
        ("room settings", as_owner, f"/rooms/{room['slug']}/settings", heading),
        ("invitation", as_visitor, f"/rooms/join/{invite_code}", heading),
        ("403", as_visitor, f"/rooms/{room['slug']}", heading),
        ("404", as_owner, "/no-such-page", heading),
        ("history", as_owner, "/jobs", '[data-testid="job-row"]'),
        ("job", as_owner, f"/jobs/{job_ids[0]}", heading),
        ("settings", as_owner, "/settings", heading),
        ("API reference", as_owner, "/schema/docs", "#api-reference .opblock"),
    ]
    overflowing = {}
    for name, context, path, ready in pages:
        page = await context.new_page()
        await page.goto(f"{base}{path}")
        await expect(page.locator(ready).first).to_be_visible(timeout=30_000)
        await page.screenshot(path=str(tmp_path / f"{name.replace(' ', '-')}.png"), full_page=True)
        if problem := await sideways_overflow(page):
            overflowing[name] = problem
        await page.close()
    for context in (anonymous, as_owner, as_visitor):
        await context.close()
    assert overflowing == {}


async def test_history_shows_each_job_as_a_card_with_its_prompt_at_390px(
    live_server: LiveServer, browser: Browser
) -> None:
    account = await sign_up(live_server.url)
    job_ids = await record_jobs(live_server, account, 2)
    page = await phone_page(browser, live_server.url, account)
    await page.goto(f"{live_server.url}/jobs")
    main = await page.locator("main").bounding_box()
    for job_id in job_ids:
        card = page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')
        # What the wide table hides on a phone is on the card, each figure named.
        await expect(card.get_by_text(LONG_PROMPT[:30])).to_be_visible()
        # (The names are drawn by CSS: in the accessible name and on screen, not in the text content.)
        await expect(card.get_by_role("cell", name="Room Global")).to_be_visible()
        await expect(card.get_by_role("cell", name="Tokens 0")).to_be_visible()
        box = await card.bounding_box()
        # A card across the page, not a cell squeezed into a column.
        assert main and box and box["width"] > main["width"] * 0.8
        await expect(card.get_by_role("link", name="Global")).to_be_visible()
    await (
        page.locator(f'[data-testid="job-row"][data-job-id="{job_ids[0]}"] time')
        .click()
    )
    await expect(page).to_have_url(f"{live_server.url}/jobs/{job_ids[0]}")
    await page.context.close()


async def test_room_statistics_show_every_figure_at_390px(live_server: LiveServer, browser: Browser) -> None:
    account = await sign_up(live_server.url)
    # A room of its own: the server is shared, and other tests run jobs in the global room.
    room = await create_room(live_server.url, account, "Statistics on a phone", private=False)
    async with httpx.AsyncClient(
        base_url=live_server.url, headers={"Authorization": f"Bearer {account.token}"}, timeout=10
    ) as http:
        for job_id in await record_jobs(live_server, account, 2, room["slug"]):
            await http.patch(f"/api/jobs/{job_id}", json={"status": "running"})
            done = {"status": "succeeded", "output": " text", "token_count": 40, "decode_ms": 500, "decode_tokens": 39}
            assert (await http.patch(f"/api/jobs/{job_id}", json=done)).status_code == 200
    page = await phone_page(browser, live_server.url, account)
    await page.goto(f"{live_server.url}/rooms/{room['slug']}/stats")
    figures = page.locator("td[data-stat]")
    await expect(figures.first).to_be_visible()
    width = await page.evaluate("document.documentElement.clientWidth")
    # The speed table's 9 columns were 671 pixels wide: its p90 and p99 lay off the screen.
    assert await figures.count() == 7 + 3  # one speed row (jobs, 3 TTFT, 3 tok/s), one model row
    for n in range(await figures.count()):
        box = await figures.nth(n).bounding_box()
        assert box and 0 <= box["x"] and box["x"] + box["width"] <= width, await figures.nth(n).get_attribute("data-stat")
    await expect(page.get_by_role("cell", name="tok/s p99")).to_be_visible()
    await page.context.close()


async def test_room_keeps_prompt_controls_on_one_row_and_peers_one_tap_away_at_390px(
    live_server: LiveServer, browser: Browser
) -> None:
    account = await sign_up(live_server.url)
    page = await phone_page(browser, live_server.url, account)
    room = await RoomPage(page, live_server.url, account=account).open()
    await room.wait_until_warm()

    controls = [page.get_by_label("Max tokens"), room.cancel, page.get_by_test_id("run")]
    boxes = [await control.bounding_box() for control in controls]
    assert all(boxes)
    middles = [box["y"] + box["height"] / 2 for box in boxes if box]
    assert max(middles) - min(middles) < 4, boxes  # one row
    assert await sideways_overflow(page) is None

    # The peers panel is below the output on a phone; a link above the prompt leads straight to it.
    output = await page.locator(".output-wrap").bounding_box()  # the conversation or the output
    peers = await room.peers.bounding_box()
    assert output and peers and peers["y"] > output["y"] + output["height"]
    jump = page.get_by_role("navigation", name="On this page").get_by_role("link", name="Peers")
    await expect(jump).to_be_in_viewport()
    await jump.click()
    await expect(room.peers).to_be_in_viewport()
    await page.context.close()


async def test_api_tokens_show_when_each_was_made_and_last_used_at_390px(
    live_server: LiveServer, browser: Browser
) -> None:
    account = await sign_up(live_server.url)
    page = await phone_page(browser, live_server.url, account)
    await page.goto(f"{live_server.url}/settings")
    row = page.get_by_test_id("token-row").first
    width = await page.evaluate("document.documentElement.clientWidth")
    # These two columns were hidden on a phone: what one needs to know before revoking a token.
    for label in ("Created", "Last used"):
        cell = row.get_by_role("cell", name=re.compile(f"^{label} "))
        await expect(cell).to_be_visible()
        box = await cell.bounding_box()
        assert box and box["x"] + box["width"] <= width
    await expect(row.get_by_role("button", name="Revoke")).to_be_visible()
    await page.context.close()
