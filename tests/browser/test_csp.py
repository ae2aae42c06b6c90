"""The Content-Security-Policy in headless Chromium: every page, a real inference in a worker
included, runs without one violation, and the watch would have seen one."""

from __future__ import annotations

import uuid

import pytest
from conftest import LiveServer
from playwright.async_api import Browser, Page, expect
from support.accounts import sign_up
from support.browser import CspWatch, new_context
from support.pages import ApiReferencePage, RegisterPage, RoomPage, RoomsPage

pytestmark = pytest.mark.browser


async def visit(page: Page, url: str, status: int = 200) -> None:
    """Open a page and check it came with the policy (no violations would also mean no policy)."""
    response = await page.goto(url)
    assert response is not None and response.status == status, url
    policy = await response.header_value("content-security-policy") or ""
    assert "script-src 'self' 'wasm-unsafe-eval'" in policy and "frame-ancestors 'none'" in policy, url


async def test_every_page_and_a_local_inference_run_without_csp_violations(
    live_server: LiveServer, browser: Browser
) -> None:
    context = await new_context(browser)
    watch = await CspWatch().attach(context)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    base = live_server.url

    await visit(page, f"{base}/login")
    await visit(page, f"{base}/register")
    await RegisterPage(page, base).sign_up(f"csp-{uuid.uuid4().hex[:10]}", "correct horse")
    await visit(page, f"{base}/rooms")
    # An htmx form: its request, its swap, and the navigation after it.
    await page.get_by_label("Name").fill("Policy bench")
    await page.get_by_role("button", name="Create room").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Policy bench")

    # The room page: Socket.IO, the inference worker, transformers.js and ONNX Runtime's WASM.
    await visit(page, f"{base}/rooms/global")
    room = RoomPage(page, base)
    await room.wait_until_warm()
    await room.run("You may", max_tokens=8)
    job = await room.recorded_job()
    assert job["status"] == "succeeded"
    # With threads, ONNX Runtime starts workers of its own from its vendored .mjs (the worker has
    # transformers.js's useWasmCache off, so ORT imports it by URL, not from a blob: copy).
    workers: list[str] = []
    page.on("worker", lambda worker: workers.append(worker.url))
    await visit(page, f"{base}/rooms/global?threads=2")
    await room.wait_until_warm()
    assert (await room.run_and_wait("You may", max_tokens=4))["status"] == "succeeded"
    ort = [url for url in workers if "/static/vendor/onnxruntime-web@" in url and url.endswith(".mjs")]
    assert ort, workers

    await visit(page, f"{base}/jobs")
    await page.get_by_label("Status").select_option("succeeded")  # htmx swaps the table in
    await expect(page.locator(f'[data-testid="job-row"][data-job-id="{job["id"]}"]')).to_be_visible()
    await visit(page, f"{base}/jobs/{job['id']}")
    await visit(page, f"{base}/no-such-page", status=404)
    # The API reference: Swagger UI, vendored, started by a module of ours.
    await visit(page, f"{base}/schema/docs")
    await expect(ApiReferencePage(page, base).operation("POST", "/api/rooms/{slug}/v1/chat/completions")).to_be_visible()
    await visit(page, f"{base}/settings")
    await page.get_by_placeholder("Token name").fill("policy")
    await page.get_by_role("button", name="Create token").click()
    await expect(page.get_by_test_id("new-token")).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{base}/login")

    await context.close()
    assert watch.violations == []
    assert errors == []


async def test_form_swap_over_a_styled_field_runs_without_csp_violations(
    live_server: LiveServer, browser: Browser
) -> None:
    # A style set through the CSSOM is allowed, and extensions, autofill and devtools set them on
    # fields; htmx's settle step used to copy that style attribute onto the field swapped in.
    account = await sign_up(live_server.url)
    context = await new_context(browser, live_server.url, account.session_cookie)
    watch = await CspWatch().attach(context)
    page = await context.new_page()
    await page.goto(f"{live_server.url}/rooms")
    await (await RoomsPage(page, live_server.url).create_room("Styled fields")).open_settings()
    name = page.get_by_label("Room name")
    await name.evaluate("(field) => { field.style.outline = '2px solid gold'; }")
    await name.fill("")
    await page.get_by_role("button", name="Rename").click()
    await expect(page.get_by_text("Give the room a name.")).to_be_visible()

    # A violation of our own after the swap, of another directive: reports arrive in order, so once
    # it is in, any the swap caused is in too.
    async with page.expect_console_message(lambda message: "violation: script-src" in message.text):
        await page.evaluate("document.head.append(Object.assign(document.createElement('script'), {textContent: '0'}))")
    await context.close()
    assert all("script-src" in line for line in watch.violations), watch.violations


async def test_watch_reports_violations_in_pages_and_workers(live_server: LiveServer, browser: Browser) -> None:
    context = await new_context(browser)
    watch = await CspWatch().attach(context)
    page = await context.new_page()
    await page.goto(f"{live_server.url}/login")
    # Inline code in the page, and a download from a host the policy does not list, in the worker.
    async with page.expect_worker() as started:
        ran_inline = await page.evaluate("""() => new Promise((resolve) => {
          const script = document.createElement("script");
          script.textContent = "window.ranInline = true";
          document.head.append(script);
          // Its answer to a bad message shows its script has run, the watch's listener included.
          const worker = new Worker("/static/js/inference-worker.js", { type: "module" });
          worker.onmessage = () => resolve(window.ranInline === true);
          worker.postMessage("hello");
        })""")
    worker = await started.value
    refused = await worker.evaluate("fetch('https://example.com/model.onnx').then(() => false, () => true)")
    def seen_in_page() -> bool:
        return any("script-src" in line and "/login" in line for line in watch.violations)

    def seen_in_worker() -> bool:
        return any("connect-src" in line and "inference-worker.js" in line for line in watch.violations)

    # Reports arrive asynchronously, the page's (console and event) often before the worker's.
    for _ in range(300):
        if seen_in_page() and seen_in_worker():
            break
        await page.wait_for_timeout(100)
    await context.close()

    assert not ran_inline and refused
    assert seen_in_page(), watch.violations
    assert seen_in_worker(), watch.violations
