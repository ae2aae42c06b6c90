"""The app with a keyboard only, in headless Chromium: the skip link comes first and lands in the
main content, Ctrl+Enter (Cmd+Enter) runs the prompt, Escape stops the run, and every control that
Tab reaches shows where the focus is, clearly enough to be seen."""

from __future__ import annotations

import re

import pytest
from conftest import LiveServer
from playwright.async_api import Browser, Locator, Page, expect
from support.a11y import CONTRAST
from support.accounts import sign_up
from support.browser import slow_tokens
from support.pages import RoomPage, go_to_page, owner_of_a_private_room

pytestmark = pytest.mark.browser

# Long enough a run (250 tokens at 60 ms each) that it is still streaming when Escape is pressed.
MS_PER_TOKEN = 60
TAB_LIMIT = 80

# What the focused element draws to show it: an outline at least 2px wide, 3:1 against what is
# behind it (WCAG 1.4.11; a faint glow is not enough). Null once Tab has left the page or come back
# round to an element it already visited.
FOCUS_MARK = """() => {
  const { contrast } = CONTRAST;
  const element = document.activeElement;
  window.visited ??= new WeakSet();
  if (!element || element === document.body || window.visited.has(element)) return null;
  window.visited.add(element);
  const style = getComputedStyle(element);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2
    && contrast(style.outlineColor, element.parentElement) >= 3;
  const label = element.tagName.toLowerCase() + (element.id ? "#" + element.id : "")
    + " " + (element.getAttribute("aria-label") || element.textContent || element.name || "").trim().slice(0, 30);
  return { label, shown: outline };
}""".replace("CONTRAST", CONTRAST, 1)


async def tab_to(page: Page, target: Locator) -> int:
    """Press Tab until `target` has the focus; how many presses it took."""
    for presses in range(1, TAB_LIMIT + 1):
        await page.keyboard.press("Tab")
        if await target.evaluate("element => element === document.activeElement"):
            return presses
    raise AssertionError(f"Tab never reached {target}")


async def test_skip_link_comes_first_and_moves_focus_to_the_main_content(
    live_server: LiveServer, page: Page
) -> None:
    account = await sign_up(live_server.url)
    # The sign-in form puts the focus in its first field already: a keyboard starts typing there.
    await page.goto(f"{live_server.url}/login")
    await expect(page.get_by_label("Username")).to_be_focused()

    await page.context.add_cookies(
        [{"name": "mesh_session", "value": account.session_cookie, "url": live_server.url}]
    )
    for path in ("/rooms", "/jobs", "/rooms/global"):
        await page.goto(f"{live_server.url}{path}")
        await page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        await expect(skip).to_be_focused()
        await expect(skip).to_be_in_viewport()  # shown once focused, hidden otherwise
        await page.keyboard.press("Enter")
        await expect(page.locator("main")).to_be_focused()
        # The next Tab goes on from the content, past the navigation.
        await page.keyboard.press("Tab")
        assert await page.evaluate(
            "document.querySelector('main').contains(document.activeElement)"
        ), path


async def test_keyboard_only_run_with_ctrl_enter_and_stop_with_escape(
    live_server: LiveServer, page: Page
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await slow_tokens(page.context, MS_PER_TOKEN)
    account = await sign_up(live_server.url)
    await page.context.add_cookies(
        [{"name": "mesh_session", "value": account.session_cookie, "url": live_server.url}]
    )
    room = await RoomPage(page, live_server.url, account=account).open()
    await room.wait_until_warm()
    prompt = page.get_by_test_id("prompt")
    max_tokens = page.get_by_label("Max tokens")
    # Plain text to continue: the job records the prompt as typed (a chat turn is templated).
    await page.get_by_label("Prompt as").select_option("complete")

    # Tab to the prompt, type, set a short run, and send it with Ctrl+Enter from the prompt.
    await tab_to(page, prompt)
    await page.keyboard.type("You may")
    await tab_to(page, max_tokens)
    await page.keyboard.press("Control+A")
    await page.keyboard.type("3")
    await page.keyboard.press("Shift+Tab")  # over the Settings of the sampling, back to the prompt
    await page.keyboard.press("Shift+Tab")
    await expect(prompt).to_be_focused()
    await page.keyboard.press("Control+Enter")
    job = await room.recorded_job()
    assert (job["status"], job["prompt"], job["token_count"]) == ("succeeded", "You may", 3)
    await expect(prompt).to_have_value("You may")  # the shortcut wrote no newline into it
    await expect(room.output).not_to_have_text("")

    # A long run sent with Cmd+Enter from the max-tokens field; Escape stops it while it streams.
    await tab_to(page, max_tokens)
    await page.keyboard.press("Control+A")
    await page.keyboard.type("250")
    await page.keyboard.press("Meta+Enter")
    await expect(room.cancel).to_be_enabled()
    await expect(room.job_link).to_have_count(0)  # the first run's link goes as the second starts
    await expect(room.output).to_have_text(re.compile(r"\S{10}"), timeout=20_000)
    await page.keyboard.press("Escape")
    cancelled = await room.recorded_job()
    assert cancelled["id"] != job["id"]
    assert cancelled["status"] == "cancelled"
    # Left alone, the run would have succeeded. (How many tokens it counts is the worker's business:
    # slow_tokens slows only what the page sees, so the worker may well have finished by now.)
    await expect(room.metrics).to_contain_text("cancelled")
    await expect(room.cancel).to_be_disabled()
    # Escape with nothing running does nothing: no run starts, the form stays as it was.
    await page.keyboard.press("Escape")
    await expect(page.get_by_test_id("run")).to_be_enabled()
    assert errors == []


async def test_every_control_tab_reaches_shows_its_focus(
    live_server: LiveServer, browser: Browser
) -> None:
    page, slug = await owner_of_a_private_room(browser, live_server.url, "Focus lab")
    unmarked: dict[str, list[str]] = {}
    for path in ("/rooms", "/jobs", "/settings", f"/rooms/{slug}/settings", f"/rooms/{slug}"):
        await go_to_page(page, live_server.url, path)
        seen: list[str] = []
        for _ in range(TAB_LIMIT):
            await page.keyboard.press("Tab")
            focus = await page.evaluate(FOCUS_MARK)
            if focus is None:
                break  # every control was visited
            seen.append(focus["label"])
            if not focus["shown"]:
                unmarked.setdefault(path, []).append(focus["label"])
        assert len(seen) > 3, (path, seen)  # the walk really went through the page's controls
    await page.context.close()
    assert unmarked == {}
