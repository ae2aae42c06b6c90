"""Mesh test helpers: room pages of several peers (one browser context each) driven through their
data-testid hooks, and the accounts and rooms they use."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest_asyncio
from conftest import LiveServer
from playwright.async_api import Browser, Locator, Page, expect
from realtime.conftest import Account, sign_up

MODEL = "tiny-gpt2"
WARM_TIMEOUT_MS = 60_000


@dataclass
class PeerPage:
    """One peer: a room page in its own browser context."""

    page: Page
    account: Account
    console: list[str] = field(default_factory=list)

    async def own_peer_id(self) -> str:
        """This page's peer id, from its own row in the peers panel."""
        row = self.page.locator('[data-testid="peer"][data-link="self"]')
        await expect(row).to_have_count(1, timeout=20_000)
        return await row.get_attribute("data-peer-id") or ""

    @property
    def output(self) -> Locator:
        return self.page.get_by_test_id("output")

    @property
    def metrics(self) -> Locator:
        return self.page.get_by_test_id("metrics")

    @property
    def serving(self) -> Locator:
        return self.page.get_by_test_id("serving")

    @property
    def flash(self) -> Locator:
        return self.page.get_by_test_id("flash")

    def peer_row(self, peer_id: str) -> Locator:
        return self.page.locator(f'[data-testid="peer"][data-peer-id="{peer_id}"]')

    @property
    def linked_rows(self) -> Locator:
        return self.page.locator('[data-testid="peer"][data-link="open"]')

    async def console_lines(self, needle: str, count: int, timeout: float = 10.0) -> list[str]:
        """At least `count` console lines containing `needle` (console events arrive asynchronously)."""
        async with asyncio.timeout(timeout):
            while len(lines := [line for line in self.console if needle in line]) < count:
                await asyncio.sleep(0.05)
        return lines

    async def wait_until_warm(self) -> None:
        backend = self.page.get_by_test_id("backend")
        await expect(backend).to_contain_text(f"warm: {MODEL}", timeout=WARM_TIMEOUT_MS)
        await expect(backend).to_have_attribute("data-state", "idle", timeout=WARM_TIMEOUT_MS)

    async def wait_for_links(self, count: int, timeout: float = 20_000) -> None:
        """Until the peers panel shows `count` peers linked over a data channel."""
        await expect(self.linked_rows).to_have_count(count, timeout=timeout)

    async def run(self, prompt: str, max_tokens: int, mode: str) -> None:
        await self.page.get_by_test_id("mode").select_option(mode)
        await self.page.get_by_test_id("prompt").fill(prompt)
        await self.page.get_by_label("Max tokens").fill(str(max_tokens))
        await self.page.get_by_test_id("run").click()

    async def finished_job(self, timeout: float = 30_000) -> dict:
        """The run's job, once recorded, read back through the JSON API."""
        link = self.metrics.get_by_role("link", name="recorded in history")
        await expect(link).to_be_visible(timeout=timeout)
        job_id = await link.get_attribute("data-job-id")
        response = await self.page.request.get(
            f"{self.page.url.split('/rooms/')[0]}/api/jobs/{job_id}"
        )
        assert response.ok, await response.text()
        return await response.json()

    async def run_and_wait(
        self, prompt: str, max_tokens: int, mode: str, previous: str | None = None
    ) -> dict:
        await self.run(prompt, max_tokens, mode)
        link = self.metrics.get_by_role("link", name="recorded in history")
        if previous:
            await expect(link).not_to_have_attribute("data-job-id", previous, timeout=30_000)
        return await self.finished_job()


OpenPeer = Callable[..., Awaitable[PeerPage]]


@pytest_asyncio.fixture
async def open_peer(browser: Browser, live_server: LiveServer) -> AsyncIterator[OpenPeer]:
    """Open a room page as a new peer (own browser context, own or given account), warm model."""
    contexts = []

    async def open_(slug: str, account: Account | None = None, warm: bool = True) -> PeerPage:
        account = account or await sign_up(live_server.url)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        await context.add_cookies(
            [{"name": "mesh_session", "value": account.session_cookie, "url": live_server.url}]
        )
        page = await context.new_page()
        peer = PeerPage(page, account)
        page.on("console", lambda message: peer.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: peer.console.append(f"pageerror: {error}"))
        await page.goto(f"{live_server.url}/rooms/{slug}")
        if warm:
            await peer.wait_until_warm()
        return peer

    yield open_
    for context in contexts:
        await context.close()


def room_name() -> str:
    return f"mesh {uuid.uuid4().hex[:8]}"
