"""A room page's messages, one place each: the run card says how runs went, the sharing card says
whether its settings were saved, and neither message turns up in the other's place."""

from __future__ import annotations

import pytest
from conftest import LiveServer
from playwright.async_api import Page, expect
from support.accounts import sign_up
from support.browser import sign_in
from support.pages import RoomPage

pytestmark = pytest.mark.browser


async def test_saving_sharing_on_a_room_page_says_saved_once_in_the_sharing_card(
    live_server: LiveServer, page: Page
) -> None:
    account = await sign_up(live_server.url, share=False)
    await sign_in(page.context, live_server.url, account.session_cookie)
    room = await RoomPage(page, live_server.url, account=account).open()
    await room.wait_until_warm()
    await expect(room.flash).to_have_text("")

    await page.get_by_test_id("share").check()
    await expect(room.sharing_message).to_have_text("Saved.")
    await expect(page.get_by_text("Saved.")).to_have_count(1)
    await expect(room.flash).to_have_text("")  # the run's place says nothing about sharing

    # A run's message goes to the run's place, and the sharing card keeps its own.
    await page.get_by_test_id("prompt").fill("   ")  # passes the browser's check, not the page's
    await page.get_by_test_id("run").click()
    await expect(room.flash).to_have_text("Write a prompt first.")
    await expect(room.sharing_message).to_have_text("Saved.")
