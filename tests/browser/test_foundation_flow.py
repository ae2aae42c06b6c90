"""A new user in headless Chromium: register, create a room, open it, then watch the history fill."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import LiveServer
from playwright.async_api import expect
from support.pages import HistoryPage, RegisterPage

pytestmark = pytest.mark.browser


async def test_register_create_room_and_see_job_in_history(live_server: LiveServer, page, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    username = f"flow-{uuid.uuid4().hex[:8]}"

    register = await RegisterPage(page, live_server.url).open()
    await register.screenshot(tmp_path / "register.png")
    rooms = await register.sign_up(username, "correct horse")
    await expect(page.get_by_text(username)).to_be_visible()
    await expect(rooms.rows.first).to_have_attribute("data-room", "global")
    await rooms.screenshot(tmp_path / "rooms.png")

    room = await rooms.create_room("Flow bench")
    await expect(room.heading).to_have_text("Flow bench")
    await expect(room.model_picker.locator('option[value="tiny-gpt2"]')).to_have_count(1)
    await expect(room.model_picker).to_have_value("tiny-gpt2")
    await expect(room.peers).to_be_visible()
    await room.screenshot(tmp_path / "room.png")
    slug = room.slug

    history = await HistoryPage(page, live_server.url).open()
    await expect(history.empty_state).to_be_visible()
    await expect(history.rows).to_have_count(0)
    await history.screenshot(tmp_path / "history-empty.png")

    job_id = await history.create_job_through_api(slug, "Once upon a time")
    await history.open()
    await expect(history.rows).to_have_count(1)
    await expect(history.row(job_id)).to_contain_text("queued")
    await expect(history.row(job_id)).to_contain_text("Once upon a time")
    await history.screenshot(tmp_path / "history-one-job.png")

    assert errors == []
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("register.png", "rooms.png", "room.png", "history-one-job.png"))
