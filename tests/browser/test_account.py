"""The account forms on the settings page, in headless Chromium: a wrong current password is shown
on the form, a new one takes, and deleting the account (after the browser's confirm) signs out."""

from __future__ import annotations

import uuid

import pytest
from conftest import LiveServer
from playwright.async_api import Browser, expect
from support.browser import CspWatch, new_context
from support.pages import RegisterPage, SettingsPage

pytestmark = pytest.mark.browser


async def test_change_password_then_delete_the_account(live_server: LiveServer, browser: Browser) -> None:
    base = live_server.url
    context = await new_context(browser)
    watch = await CspWatch().attach(context)
    page = await context.new_page()
    username = f"acct-{uuid.uuid4().hex[:8]}"
    await (await RegisterPage(page, base).open()).sign_up(username, "correct horse")

    settings = await SettingsPage(page, base).open()
    await settings.change_password("not my password", "battery staple")
    await expect(page.get_by_test_id("flash").filter(has_text="That is not your current password.")).to_be_visible()
    await expect(page.get_by_label("Current password")).to_have_attribute("aria-invalid", "true")
    await settings.change_password("correct horse", "battery staple")
    await expect(page.get_by_test_id("flash").filter(has_text="Password changed.")).to_be_visible()

    # Cancelling the browser's question keeps the account.
    page.once("dialog", lambda dialog: dialog.dismiss())
    await page.get_by_label("Your password").fill("battery staple")
    await page.get_by_role("button", name="Delete my account").click()
    await expect(page).to_have_url(f"{base}/settings")
    await settings.delete_account("battery staple")
    await expect(page).to_have_url(f"{base}/register?account=deleted")
    await expect(page.get_by_test_id("flash")).to_have_text("Your account has been deleted.")
    await expect(page.get_by_text(username)).to_have_count(0)

    await page.goto(f"{base}/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill("battery staple")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("flash")).to_have_text("Wrong username or password.")
    await context.close()
    assert watch.violations == []
