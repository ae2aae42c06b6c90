"""The app with a screen reader and with low vision, in headless Chromium: a chat answer is said
once it is finished, not counted out token by token; every control and heading has a name; the
fields' edges stand out from the panels they sit on (3:1, WCAG 1.4.11)."""

from __future__ import annotations

import re
from itertools import groupby

import pytest
from conftest import LiveServer
from playwright.async_api import Browser, Page, expect
from support.a11y import CONTRAST, LIVE_REGIONS, busy_changes, nameless, said
from support.accounts import Account, create_room, sign_up
from support.browser import new_context, slow_tokens
from support.pages import ChatPage, RoomPage, SettingsPage, go_to_page, owner_of_a_private_room

pytestmark = pytest.mark.browser

# Slow enough that the dock counts several tokens while the answer streams.
MS_PER_TOKEN = 40
TOKEN_COUNT = re.compile(r"\b\d+ tokens?\b")


async def listened_room(live_server: LiveServer, browser: Browser, name: str) -> tuple[Account, Page, str]:
    """A new account's page, its tokens slowed and its live regions recorded, and a room of its
    own (the global room's statistics are other tests' to count): the account, page and slug."""
    account = await sign_up(live_server.url)
    context = await new_context(browser, live_server.url, account.session_cookie)
    await slow_tokens(context, MS_PER_TOKEN)
    await context.add_init_script(LIVE_REGIONS)
    room = await create_room(live_server.url, account, name, private=False)
    return account, await context.new_page(), room["slug"]


async def test_chat_answer_is_said_once_when_finished_and_no_token_count_is_said(
    live_server: LiveServer, browser: Browser
) -> None:
    account, page, slug = await listened_room(live_server, browser, "Live regions")
    chat = await ChatPage(page, live_server.url, account=account).open(slug)
    await chat.wait_until_warm()
    counts: list[str] = []
    page.on(
        "console",
        lambda message: counts.append(message.text) if message.text.startswith("dock:") else None,
    )
    await page.evaluate("""() => new MutationObserver(() => console.log("dock:" + document.querySelector('[data-testid="dock-work"]').textContent))
      .observe(document.querySelector('[data-testid="dock-work"]'), { childList: true, characterData: true, subtree: true })""")

    await chat.send("Tell me a story", 12)
    answer = (await chat.stored())["turns"][-1]["content"]
    assert answer

    # The dock still counts on screen...
    assert any(TOKEN_COUNT.search(text) for text in counts), counts
    spoken = await said(page)
    # ...but no count is ever said; the start is, once.
    assert [s.text for s in spoken if TOKEN_COUNT.search(s.text)] == []
    assert [s.text for s in spoken if "Running your prompt" in s.text] == ["Running your prompt"]
    # The answer is said once, as a whole, by a polite region.
    answers = [s for s in spoken if answer in s.text]
    assert [s.text for s in answers] == [f"Answer: {answer}"], spoken
    region = page.locator(f"#{answers[0].region}")
    assert await region.evaluate(
        "el => el.getAttribute('role') === 'status' || el.getAttribute('aria-live') === 'polite'"
    )
    # The conversation is marked busy while the answer streams and is stored, then not.
    changes = [value for value, _ in groupby(await busy_changes(page, "turns"))]
    assert changes[-2:] == ["true", "false"], changes
    await page.context.close()


async def test_plain_text_output_is_said_once_when_finished(
    live_server: LiveServer, browser: Browser
) -> None:
    account, page, slug = await listened_room(live_server, browser, "Plain output")
    room = await RoomPage(page, live_server.url, account=account).open(slug)
    await room.wait_until_warm()

    job = await room.run_and_wait("Once upon a time", 8)
    spoken = await said(page)
    assert [s.text for s in spoken if s.region == "output"] == [job["output"].strip()]
    assert [s.text for s in spoken if TOKEN_COUNT.search(s.text)] == []
    await page.context.close()


async def open_details(page: Page) -> None:
    """Open every disclosure, so what is folded away is checked too."""
    await page.evaluate("document.querySelectorAll('details').forEach((d) => (d.open = true))")


async def test_every_control_heading_and_header_cell_has_a_name(
    live_server: LiveServer, browser: Browser
) -> None:
    page, slug = await owner_of_a_private_room(browser, live_server.url, "Names lab")
    unnamed: dict[str, list[str]] = {}
    for path in ("/rooms", "/jobs", "/conversations", "/settings", f"/rooms/{slug}/settings", f"/rooms/{slug}"):
        await go_to_page(page, live_server.url, path)
        await open_details(page)
        if path == "/settings":  # with the table of tokens (sign_up made one)
            await expect(page.get_by_test_id("token-row")).to_have_count(1)
        if found := await nameless(page):
            unnamed[path] = found
    anonymous = await browser.new_page()
    for path in ("/login", "/register"):
        await anonymous.goto(f"{live_server.url}{path}")
        if found := await nameless(anonymous):
            unnamed[path] = found
    await anonymous.close()
    await page.context.close()
    assert unnamed == {}


async def test_settings_headings_each_head_their_own_content(
    live_server: LiveServer, browser: Browser
) -> None:
    account = await sign_up(live_server.url)
    context = await new_context(browser, live_server.url, account.session_cookie)
    page = await context.new_page()
    await SettingsPage(page, live_server.url).open()
    # No heading is followed straight away by a deeper one: each says something of its own first.
    empty = await page.evaluate("""() => [...document.querySelectorAll("main :is(h1, h2, h3, h4)")].filter((h, i, all) => {
        const next = all[i + 1];
        if (!next || Number(next.tagName[1]) <= Number(h.tagName[1])) return false;
        const range = document.createRange();
        range.setStartAfter(h);
        range.setEndBefore(next);
        return !range.toString().trim() && !range.cloneContents().querySelector("input:not([type=hidden]), select, textarea, button");
      }).map((h) => h.textContent.trim())""")
    assert empty == []
    await expect(
        page.get_by_role("region", name="Account").get_by_role("heading", level=2)
    ).to_have_text(["Change password", "Delete account"])
    await page.context.close()


FIELD_EDGES = f"""() => {{
  const {{ contrast }} = {CONTRAST};
  return [...document.querySelectorAll("input:not([type=checkbox]):not([type=radio]):not([type=hidden]), select, textarea")]
    .filter((field) => field.checkVisibility())
    .map((field) => ({{ field: field.id || field.name, ratio: contrast(getComputedStyle(field).borderTopColor, field.parentElement) }}))
    .filter(({{ ratio }}) => ratio < 3);
}}"""


async def test_field_edges_stand_out_from_their_panel(
    live_server: LiveServer, browser: Browser
) -> None:
    page, slug = await owner_of_a_private_room(browser, live_server.url, "Edges lab")
    faint: dict[str, list] = {}
    for path in ("/rooms", "/settings", f"/rooms/{slug}/settings", f"/rooms/{slug}"):
        await go_to_page(page, live_server.url, path)
        await open_details(page)
        if found := await page.evaluate(FIELD_EDGES):
            faint[path] = found
    await page.context.close()
    assert faint == {}
