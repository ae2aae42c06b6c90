"""Helpers for the in-browser inference tests: a room page object, an off-origin request guard, and
a second Chromium whose only WebGPU adapter is SwiftShader (a CPU emulator, slow but real WebGPU)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
from conftest import CHROMIUM, CHROMIUM_ARGS, require
from playwright.async_api import BrowserContext, Page, Request, async_playwright

from browser.pages import RegisterPage, RunCard

SWIFTSHADER_ARGS = [*CHROMIUM_ARGS, "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]


@dataclass
class RequestLog:
    """Every request the pages and their workers make, to prove nothing leaves the app's origin."""

    origin: str
    urls: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> RequestLog:
        context.on("request", self._record)
        return self

    def _record(self, request: Request) -> None:
        self.urls.append(request.url)

    @property
    def off_origin(self) -> list[str]:
        local = (self.origin + "/", "blob:", "data:")
        return [url for url in self.urls if not url.startswith(local)]

    def count(self, path_prefix: str) -> int:
        return sum(url.startswith(self.origin + path_prefix) for url in self.urls)


@dataclass
class InferenceRoom(RunCard):
    """A room page opened at `base_url`, driven through its run card."""

    base_url: str = ""

    async def open(self, slug: str = "global", query: str = "") -> InferenceRoom:
        await self.page.goto(f"{self.base_url}/rooms/{slug}{query}")
        return self


async def sign_in(page: Page, base_url: str) -> None:
    await (await RegisterPage(page, base_url).open()).sign_up(f"inf-{uuid.uuid4().hex[:10]}", "correct horse")


@pytest_asyncio.fixture(scope="session")
async def swiftshader_browser():
    """Chromium with SwiftShader as its WebGPU adapter: tens of seconds to a first token."""
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=SWIFTSHADER_ARGS)
        yield instance
        await instance.close()


@pytest_asyncio.fixture
async def gpu_page(swiftshader_browser) -> AsyncIterator[Page]:
    context = await swiftshader_browser.new_context(viewport={"width": 1280, "height": 900})
    yield await context.new_page()
    await context.close()
