"""Mesh test helpers: room pages of several peers (one browser context each), and room names."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio
from conftest import LiveServer
from playwright.async_api import Browser, Page
from support.accounts import Account, sign_up
from support.browser import new_context, slow_tokens
from support.pages import RoomPage

OpenPeer = Callable[..., Awaitable[RoomPage]]


@contextlib.asynccontextmanager
async def peer_pages(browser: Browser, base_url: str) -> AsyncIterator[OpenPeer]:
    """Open room pages of the server at `base_url` as new peers (own browser context each, own or
    given account, warm model unless told); their contexts close at the end. `ms_per_token` makes
    one a slow device (support.browser.SLOW_TOKENS)."""
    contexts = []

    async def open_(
        slug: str,
        account: Account | None = None,
        warm: bool = True,
        before_open: Callable[[Page], Awaitable[None]] | None = None,
        ms_per_token: int = 0,
    ) -> RoomPage:
        account = account or await sign_up(base_url)
        context = await new_context(browser, base_url, account.session_cookie)
        contexts.append(context)
        if ms_per_token:
            await slow_tokens(context, ms_per_token)
        page = await context.new_page()
        if before_open is not None:
            await before_open(page)  # e.g. init scripts and listeners that must see the page load
        peer = RoomPage(page, base_url, account=account)
        page.on("console", lambda message: peer.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: peer.console.append(f"pageerror: {error}"))
        await peer.open(slug)
        if warm:
            await peer.wait_until_warm()
        return peer

    try:
        yield open_
    finally:
        for context in contexts:
            await context.close()


@pytest_asyncio.fixture
async def open_peer(browser: Browser, live_server: LiveServer) -> AsyncIterator[OpenPeer]:
    """Open a room page of the shared live server as a new peer (see peer_pages)."""
    async with peer_pages(browser, live_server.url) as open_:
        yield open_


def room_name() -> str:
    return f"mesh {uuid.uuid4().hex[:8]}"


async def first_worker(peers: dict[str, RoomPage], timeout: float = 20.0) -> tuple[str, RoomPage]:
    """The peer whose page starts running someone's job first."""
    async with asyncio.timeout(timeout):
        while True:
            for peer_id, peer in peers.items():
                if await peer.serving.get_attribute("data-state") == "running":
                    return peer_id, peer
            await asyncio.sleep(0.02)
