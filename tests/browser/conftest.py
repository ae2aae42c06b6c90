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
from playwright.async_api import BrowserContext, Locator, Page, Request, async_playwright, expect

from browser.pages import RegisterPage

SWIFTSHADER_ARGS = [*CHROMIUM_ARGS, "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]
MODEL = "tiny-gpt2"


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
class InferenceRoom:
    """The run card of a room page, through its data-testid hooks."""

    page: Page
    base_url: str

    async def open(self, slug: str = "global", query: str = "") -> InferenceRoom:
        await self.page.goto(f"{self.base_url}/rooms/{slug}{query}")
        return self

    async def wait_until_warm(self, timeout: float = 60_000) -> None:
        await expect(self.backend).to_have_attribute("data-state", "idle", timeout=timeout)
        await expect(self.backend).to_contain_text(f"warm: {MODEL}", timeout=timeout)

    @property
    def backend(self) -> Locator:
        return self.page.get_by_test_id("backend")

    @property
    def output(self) -> Locator:
        return self.page.get_by_test_id("output")

    @property
    def metrics(self) -> Locator:
        return self.page.get_by_test_id("metrics")

    @property
    def progress(self) -> Locator:
        return self.page.get_by_test_id("progress")

    @property
    def flash(self) -> Locator:
        return self.page.get_by_test_id("flash")

    @property
    def job_link(self) -> Locator:
        return self.metrics.get_by_role("link", name="recorded in history")

    async def run(self, prompt: str, max_tokens: int) -> None:
        await self.page.get_by_test_id("model").select_option(MODEL)
        await self.page.get_by_test_id("prompt").fill(prompt)
        await self.page.get_by_label("Max tokens").fill(str(max_tokens))
        await self.page.get_by_test_id("run").click()

    async def recorded_job(self, timeout: float = 30_000) -> dict:
        """The finished run's job, read back through the JSON API the page recorded it with."""
        await expect(self.job_link).to_be_visible(timeout=timeout)
        job_id = await self.job_link.get_attribute("data-job-id")
        response = await self.page.request.get(f"{self.base_url}/api/jobs/{job_id}")
        assert response.ok, await response.text()
        return await response.json()


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
