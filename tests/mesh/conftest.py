"""Mesh test helpers: room pages of several peers (one browser context each) driven through their
data-testid hooks, and the accounts and rooms they use."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest_asyncio
from browser.pages import RunCard
from conftest import LiveServer
from playwright.async_api import Browser, Locator, expect
from realtime.conftest import Account, sign_up


@dataclass
class PeerPage(RunCard):
    """One peer: a room page in its own browser context."""

    account: Account = None  # type: ignore[assignment]
    console: list[str] = field(default_factory=list)

    async def own_peer_id(self) -> str:
        """This page's peer id, from its own row in the peers panel."""
        row = self.page.locator('[data-testid="peer"][data-link="self"]')
        await expect(row).to_have_count(1, timeout=20_000)
        return await row.get_attribute("data-peer-id") or ""

    @property
    def serving(self) -> Locator:
        return self.page.get_by_test_id("serving")

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

    async def wait_for_links(self, count: int, timeout: float = 20_000) -> None:
        """Until the peers panel shows `count` peers linked over a data channel."""
        await expect(self.linked_rows).to_have_count(count, timeout=timeout)


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
        peer = PeerPage(page, account=account)
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
