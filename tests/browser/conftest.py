"""A second Chromium whose only WebGPU adapter is SwiftShader (a CPU emulator, slow but real WebGPU)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from conftest import require
from playwright.async_api import Page, async_playwright
from support.browser import CHROMIUM, SWIFTSHADER_ARGS, new_context


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
    context = await new_context(swiftshader_browser)
    yield await context.new_page()
    await context.close()
