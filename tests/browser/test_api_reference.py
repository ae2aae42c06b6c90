"""The API reference page in headless Chromium: Swagger UI from the vendored files, under the
app's Content-Security-Policy, listing the OpenAI-compatible routes and sending real requests."""

from __future__ import annotations

import pytest
from conftest import LiveServer
from playwright.async_api import Browser, expect
from support.accounts import sign_up
from support.browser import CspWatch, RequestLog, new_context
from support.pages import ApiReferencePage

pytestmark = pytest.mark.browser


async def test_api_reference_lists_the_api_without_csp_violations(live_server: LiveServer, browser: Browser) -> None:
    context = await new_context(browser)
    watch = await CspWatch().attach(context)
    requests = RequestLog(live_server.url).attach(context)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    docs = await ApiReferencePage(page, live_server.url).open()
    await expect(docs.operation("POST", "/api/rooms/{slug}/v1/chat/completions")).to_be_visible()
    await expect(docs.operation("GET", "/api/jobs/{job_id}")).to_be_visible()
    await expect(docs.authorize_button).to_be_visible()
    # The form routes of the pages are not part of the API.
    await expect(docs.operation("POST", "/rooms/join")).to_have_count(0)

    # An operation opens with its description and an example, and "Try it out" really calls it.
    await docs.operation("GET", "/api/health").click()
    await expect(page.get_by_text("Whether this instance can use its database")).to_be_visible()
    await docs.try_it_out()
    await expect(docs.live_response_body).to_contain_text('"database": "ok"')
    await docs.operation("POST", "/api/rooms/{slug}/v1/chat/completions").click()
    await expect(page.get_by_text("Say hello to the mesh.").first).to_be_visible()

    await context.close()
    assert requests.off_origin == []
    assert watch.violations == []
    assert errors == []


async def test_try_it_out_writes_with_the_browser_session(live_server: LiveServer, browser: Browser) -> None:
    """A signed-in reader's "Try it out" on a write sends the session's CSRF header: the example
    body creates a room."""
    account = await sign_up(live_server.url, "docs")
    context = await new_context(browser, live_server.url, account.session_cookie)
    page = await context.new_page()
    docs = await ApiReferencePage(page, live_server.url).open()
    await docs.operation("POST", "/api/rooms").click()
    await docs.try_it_out()
    await expect(docs.live_response_status).to_have_text("201")
    await expect(docs.live_response_body).to_contain_text('"name": "Reading group"')
    await context.close()
