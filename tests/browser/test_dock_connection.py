"""The dock follows the tab's connection to its room on every page: it says when the tab is
reconnecting, shows the new peer id once it is back, and says the tab is out of the room when the
server refuses it; a screen reader hears each of those once."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import start_server
from playwright.async_api import Browser, expect
from realtime.test_credentials import sign_out
from support.accounts import sign_up
from support.browser import new_context
from support.pages import Dock, RoomPage

pytestmark = pytest.mark.browser

# Every text the dock's status region is given, in order (what a screen reader would hear).
RECORD_NEWS = """() => {
  window.dockNews = [];
  const news = document.querySelector('[data-testid="dock-news"]');
  new MutationObserver(() => window.dockNews.push(news.textContent)).observe(news, { childList: true, characterData: true, subtree: true });
}"""


async def test_the_dock_says_reconnecting_shows_the_new_peer_id_and_says_when_refused(
    tmp_path: Path, browser: Browser
) -> None:
    server = start_server(tmp_path)
    account = await sign_up(server.url)
    context = await new_context(browser, server.url, account.session_cookie)
    try:
        page = await context.new_page()
        room = await RoomPage(page, server.url, account=account).open("global")
        dock = Dock(page)
        before = await dock.peer_id()
        await room.follow("History")
        await expect(page).to_have_url(f"{server.url}/jobs")
        await page.evaluate(RECORD_NEWS)

        server.stop()
        await expect(dock.root).to_have_attribute("data-connection", "reconnecting", timeout=30_000)
        await expect(dock.state).to_have_text("reconnecting…")
        await expect(dock.root).to_have_attribute("data-peer-id", "")

        server.start_again()
        await expect(dock.root).to_have_attribute("data-connection", "joined", timeout=60_000)
        after = await dock.peer_id()
        assert after != before
        await expect(dock.state).not_to_have_text("reconnecting…")

        await sign_out(server.url, account)
        await expect(dock.root).to_have_attribute("data-connection", "refused", timeout=30_000)
        await expect(dock.state).to_have_text("not in the room (Sign in first)")
        await expect(dock.root).to_have_attribute("data-peer-id", "")
        news = await page.evaluate("dockNews")
        # However many tries the reconnect took: each change said once, in order.
        assert news == [
            "Lost the connection to Global; reconnecting…",
            "Back in Global.",
            "Lost the connection to Global; reconnecting…",
            "No longer in Global: Sign in first: the connection needs a valid session cookie or Bearer token.",
        ], news
    finally:
        await context.close()
        server.stop()
