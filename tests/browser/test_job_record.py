"""A run's record in the history (job-record.js) when the server is out of reach for a while: its
steps wait and go again, in order, and the page says so; a refusal is final and says why."""

from __future__ import annotations

import json

import pytest
from conftest import LiveServer
from playwright.async_api import Page, Route, expect
from support.browser import slow_tokens
from support.pages import open_room

pytestmark = pytest.mark.browser

TOKENS = 40
# About 2.5 s a run: the record opens a second in, so its first steps go while the run streams.
MS_PER_TOKEN = 60


def step(route: Route) -> tuple[str, str | None]:
    body = json.loads(route.request.post_data or "{}")
    return route.request.method, body.get("status")


async def test_a_record_the_server_cannot_take_for_a_while_is_saved_in_order_once_it_can(
    live_server: LiveServer, page: Page
) -> None:
    await slow_tokens(page.context, MS_PER_TOKEN)
    room = await open_room(page, live_server.url)
    refused: list[tuple[str, str | None]] = []
    passed: list[tuple[str, str | None]] = []
    down = True

    async def server(route: Route) -> None:
        # The job is created; then the server goes away (connection refused) until the test says.
        if down and route.request.method == "PATCH":
            refused.append(step(route))
            await route.abort("connectionrefused")
        else:
            passed.append(step(route))
            await route.continue_()

    await page.route("**/api/jobs/**", server)
    await page.route("**/api/jobs", server)
    await room.run("You may", TOKENS)
    await expect(room.flash).to_contain_text("Saving this run to your history", timeout=60_000)
    await expect(room.flash).to_contain_text("try again")
    await expect(room.job_link).to_have_count(0)
    down = False

    job = await room.recorded_job(timeout=90_000)
    assert job["status"] == "succeeded" and job["token_count"] == TOKENS
    assert job["output"] == await room.output.text_content()
    # The attempt's step was sent again until it got through, and the end waited behind it.
    assert refused and set(refused) == {("PATCH", "running")}
    assert passed == [("POST", None), ("PATCH", "running"), ("PATCH", "succeeded")]
    await expect(room.flash).not_to_contain_text("Saving this run")


async def test_a_record_the_server_refuses_is_not_sent_again_and_the_page_says_why(
    live_server: LiveServer, page: Page
) -> None:
    room = await open_room(page, live_server.url)
    patches: list[tuple[str, str | None]] = []

    async def server(route: Route) -> None:
        if route.request.method != "PATCH":
            await route.continue_()
            return
        patches.append(step(route))
        await route.fulfill(status=403, json={"status_code": 403, "detail": "This job is not yours to record."})

    await page.route("**/api/jobs/**", server)
    await room.run("You may", 5)
    await expect(room.flash).to_have_text(
        "This run was not recorded in your history: This job is not yours to record.", timeout=60_000
    )
    assert patches == [("PATCH", "running")]


async def test_a_create_whose_answer_was_lost_is_sent_again_and_recorded_once(
    live_server: LiveServer, page: Page
) -> None:
    room = await open_room(page, live_server.url)
    creates: list[str] = []

    async def server(route: Route) -> None:
        if route.request.method == "POST":
            creates.append(json.loads(route.request.post_data or "{}").get("id"))
            if len(creates) == 1:
                await route.fetch()  # the server makes the job...
                await route.abort("connectionreset")  # ...and its answer never reaches the page
                return
        await route.continue_()

    await page.route("**/api/jobs", server)
    await room.run("You may", TOKENS)

    job = await room.recorded_job(timeout=90_000)
    assert job["status"] == "succeeded" and job["output"] == await room.output.text_content()
    history = await page.request.get(f"{live_server.url}/api/jobs")
    assert [listed["id"] for listed in (await history.json())["jobs"]] == [job["id"]]
    assert creates == [job["id"], job["id"]]
