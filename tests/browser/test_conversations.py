"""Conversations on the room page with the tiny model, in headless Chromium: the prompt each answer
runs is the whole conversation as the model reads it (proved by the worker's own engine writing the
same answer from that text), regenerate, edit and resend, trimming to the context, reopening a stored
conversation, and Markdown that carries a script or an event handler rendering inert."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from conftest import LiveServer
from playwright.async_api import Dialog, Page, Response, Route, expect
from support.accounts import sign_up
from support.browser import sign_in
from support.pages import ChatPage

from browser.test_inference import CANCEL_ON_FIRST_WORDS
from browser.test_model_settings import HUB, SMOL
from mesh_nanollm.worker.engine import load_engine

pytestmark = pytest.mark.browser

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def transcript(system: str, turns: list[tuple[str, str]]) -> str:
    """The plain rendering every peer uses for a model without a chat template (docs/conversations.md)."""
    lines = [f"system: {system}\n"] if system else []
    lines += [f"{role}: {content}\n" for role, content in turns]
    return "".join(lines) + "assistant:"


def greedy(prompt: str, job: dict) -> str:
    """What the tiny model answers to `prompt` with the job's settings, computed here in Python."""
    engine = load_engine("tiny-gpt2", models_dir=MODELS_DIR, dtype="q8")
    # The model's own generation_config supplies the rest (repetition_penalty 1.2), as in the browser.
    return "".join(
        engine.generate(
            prompt, {"max_new_tokens": job["params"]["max_new_tokens"]}, threading.Event()
        )
    )


async def open_chat(page: Page, server: LiveServer) -> ChatPage:
    account = await sign_up(server.url)
    await sign_in(page.context, server.url, account.session_cookie)
    chat = await ChatPage(page, server.url, account=account).open()
    await chat.wait_until_warm()
    return chat


async def test_three_turns_run_the_templated_history_then_regenerate_and_edit(
    live_server: LiveServer, page: Page, tmp_path: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    chat = await open_chat(page, live_server)
    await chat.set_system_prompt("Answer in the words of a licence.")
    questions = ["What may I copy?", "And the source code?", "Who holds the copyright?"]
    for question in questions:
        await chat.send(question, max_tokens=12)

    conversation = await chat.stored()
    turns = conversation["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant"] * 3
    assert [t["content"] for t in turns[::2]] == questions
    # The page shows each turn as a bubble, the system prompt first, each answer with its meta line.
    await expect(chat.messages).to_have_count(7)
    assert await chat.roles() == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    for answer in turns[1::2]:
        bubble = chat.answer_of_job(answer["job"])
        await expect(bubble).to_contain_text("tiny-gpt2 · ran in this browser · first token")
        # A speed, or the honest word for a run too short to time (jobs/trace.py's rule).
        await expect(bubble).to_contain_text(re.compile(r"\d tok/s|too short to measure a speed"))
        await expect(bubble.get_by_role("link", name="job")).to_have_attribute(
            "href", f"/jobs/{answer['job']}"
        )

    # Each answer's job ran the conversation so far, through the (plain) template: the third one's
    # prompt is the system prompt and both earlier exchanges, and the model's answer to exactly that
    # text, computed by the worker's engine, is what the page streamed and stored.
    history: list[tuple[str, str]] = []
    for question, answer in zip(questions, turns[1::2], strict=True):
        job = await chat.job(answer["job"])
        history.append(("user", question))
        assert job["prompt"] == transcript("Answer in the words of a licence.", history)
        assert job["output"].strip() == answer["content"]
        history.append(("assistant", answer["content"]))
    assert job["output"] == greedy(job["prompt"], job) and job["status"] == "succeeded"
    assert await chat.output.text_content() == job["output"]
    await chat.screenshot(tmp_path / "conversation-three-turns.png")

    # Regenerate: the last answer is replaced by a new job's, run on the same history; the old job stays.
    await expect(chat.page.get_by_test_id("regenerate")).to_have_count(1)
    await chat.page.get_by_test_id("regenerate").click()
    await expect(chat.answer_of_job(turns[-1]["job"])).to_have_count(0, timeout=30_000)
    await expect(chat.messages.last.locator(".markdown")).to_be_visible(timeout=30_000)
    again = (await chat.stored())["turns"]
    assert len(again) == 6 and again[:5] == turns[:5] and again[5]["job"] != turns[5]["job"]
    regenerated = await chat.job(again[5]["job"])
    assert (
        regenerated["prompt"] == job["prompt"] and regenerated["output"] == job["output"]
    )  # greedy: the same words
    assert (await chat.job(turns[5]["job"]))["status"] == "succeeded"

    # Edit the second question and send it again: what followed it goes, the answer runs on the new history.
    await chat.edit(2, "What is a derivative work?")
    await expect(chat.messages).to_have_count(5, timeout=30_000)
    await expect(chat.messages.last.locator(".markdown")).to_be_visible(timeout=30_000)
    edited = (await chat.stored())["turns"]
    assert [t["content"] for t in edited[::2]] == ["What may I copy?", "What is a derivative work?"]
    job = await chat.job(edited[3]["job"])
    assert job["prompt"] == transcript(
        "Answer in the words of a licence.",
        [
            ("user", questions[0]),
            ("assistant", turns[1]["content"]),
            ("user", "What is a derivative work?"),
        ],
    )
    assert job["output"] == greedy(job["prompt"], job)

    # The job page names the conversation its answer belongs to.
    await page.goto(f"{live_server.url}/jobs/{edited[3]['job']}")
    await expect(page.get_by_test_id("job-conversation")).to_contain_text(
        "What may I copy? (turn 4)"
    )
    assert errors == []


async def test_turns_that_no_longer_fit_the_context_are_left_out_and_the_page_says_so(
    live_server: LiveServer, page: Page
) -> None:
    chat = await open_chat(page, live_server)
    # A first answer of 200 tokens: with the next question and room for its answer it passes the
    # tiny model's 256 positions, so the next job runs without the first exchange.
    await chat.send("You may", max_tokens=200)
    await chat.send("The Program", max_tokens=100)
    turns = (await chat.stored())["turns"]
    assert turns[1]["trimmed"] == 0 and turns[3]["trimmed"] == 2
    job = await chat.job(turns[3]["job"])
    assert job["prompt"] == "user: The Program\nassistant:"
    await expect(chat.messages.last).to_contain_text("2 earlier turns were left out")
    await expect(chat.messages.nth(1)).not_to_contain_text("left out")


async def test_a_stored_conversation_reopens_from_the_lists_and_carries_on(
    live_server: LiveServer, page: Page
) -> None:
    chat = await open_chat(page, live_server)
    await chat.send("You may", max_tokens=8)
    first = await chat.stored()
    await page.get_by_test_id("new-conversation").click()
    await expect(chat.messages).to_have_count(0)
    await expect(page).to_have_url(f"{live_server.url}/rooms/global")
    await chat.send("The licence", max_tokens=8)
    second = await chat.stored()
    # The room's list names both, newest first.
    rows = page.get_by_test_id("conversation-row")
    await expect(rows).to_have_count(2)
    assert [await row.get_attribute("data-conversation-id") for row in await rows.all()] == [
        second["id"],
        first["id"],
    ]

    # From the list of all conversations: rename the first, then open it.
    await (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Conversations")
        .click()
    )
    await page.get_by_label("New title for “You may”").fill("Licence words")
    await (
        page.locator(f'[data-conversation-id="{first["id"]}"]')
        .get_by_role("button", name="Rename")
        .click()
    )
    await expect(page.get_by_role("link", name="Licence words")).to_be_visible()
    await page.get_by_role("link", name="Licence words").click()
    await expect(page).to_have_url(f"{live_server.url}/rooms/global?conversation={first['id']}")
    await expect(chat.messages).to_have_count(2)
    await expect(page.locator("#conversation-title")).to_have_text("Licence words")
    await expect(chat.messages.last.locator(".markdown")).to_have_text(first["turns"][1]["content"])

    # It carries on from where it was: the next answer runs on the reopened history.
    await chat.send("The Program", max_tokens=8)
    turns = (await chat.stored())["turns"]
    assert len(turns) == 4 and (await chat.stored())["id"] == first["id"]
    job = await chat.job(turns[3]["job"])
    assert job["prompt"] == transcript(
        "", [("user", "You may"), ("assistant", turns[1]["content"]), ("user", "The Program")]
    )

    # Deleted from the list, after the browser's question, it is gone; the other stays.
    await (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Conversations")
        .click()
    )
    delete = page.locator(f'[data-conversation-id="{first["id"]}"]').get_by_role("button", name="Delete")
    asked: list[str] = []

    async def answer(dialog: Dialog, accept: bool) -> None:
        asked.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    await delete.click()
    await page.reload()  # cancelled: the server still has it
    await expect(page.get_by_test_id("conversation-row")).to_have_count(2)
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    await delete.click()
    await expect(page.get_by_test_id("conversation-row")).to_have_count(1)
    assert asked == ["Delete “Licence words”? Its turns cannot be brought back."] * 2
    await expect(page.get_by_test_id("conversation-row")).to_have_attribute(
        "data-conversation-id", second["id"]
    )


async def test_a_question_dropped_when_its_model_fails_leaves_the_room_list_counting_right(
    live_server: LiveServer, page: Page
) -> None:
    await page.context.route(HUB, lambda route: route.abort("internetdisconnected"))
    chat = await open_chat(page, live_server)
    await chat.send("You may", max_tokens=8)
    row = page.get_by_test_id("conversation-row")
    await expect(row).to_contain_text("2 turns")

    # The question is stored (the list reloads: 3 turns), the model cannot be downloaded, the
    # question is dropped again: the list reloads once more.
    reloads = 0

    def second_reload(response: Response) -> bool:
        nonlocal reloads
        reloads += "/conversations?room=global" in response.url
        return reloads == 2

    async with page.expect_response(second_reload, timeout=60_000):
        await page.get_by_test_id("model").select_option(SMOL)
        await page.get_by_test_id("prompt").fill("The licence")
        await page.get_by_test_id("run").click()
        await expect(page.get_by_test_id("model-error")).to_have_attribute(
            "data-reason", "hub_unreachable", timeout=30_000
        )
    await expect(page.get_by_test_id("prompt")).to_have_value("The licence")
    assert len((await chat.stored())["turns"]) == 2
    await expect(row).to_contain_text("2 turns")


INJECTED = (
    "Here is code:\n\n```html\n<script>window.pwned = 'fence'</script>\n```\n\n"
    "<script>window.pwned = 'script'</script>\n\n"
    '<img src="/nowhere.png" onerror="window.pwned = \'onerror\'">\n\n'
    "[click me](javascript:window.pwned='link') and **bold**"
)


async def test_markdown_with_a_script_and_onerror_renders_inert(
    live_server: LiveServer, page: Page, tmp_path: Path
) -> None:
    account = await sign_up(live_server.url)
    await sign_in(page.context, live_server.url, account.session_cookie)
    # The page's own CSRF token, as the room page sends it.
    await page.goto(f"{live_server.url}/conversations")
    headers = {
        "x-csrftoken": await page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    }
    created = await page.request.post(
        f"{live_server.url}/api/conversations", data={"room": "global"}, headers=headers
    )
    conversation = await created.json()
    for role, content in [("user", "Show me <b>HTML</b>"), ("assistant", INJECTED)]:
        response = await page.request.post(
            f"{live_server.url}/api/conversations/{conversation['id']}/turns",
            data={"role": role, "content": content},
            headers=headers,
        )
        assert response.ok, await response.text()

    chat = await ChatPage(page, live_server.url, account=account).open(
        query=f"?conversation={conversation['id']}"
    )
    answer = chat.messages.last.locator(".markdown")
    await expect(answer).to_contain_text("<script>window.pwned = 'script'</script>")
    await expect(answer.locator("pre code")).to_have_text(
        "<script>window.pwned = 'fence'</script>\n"
    )
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(chat.messages.nth(0).locator(".turn-body")).to_have_text("Show me <b>HTML</b>")
    # Nothing ran, nothing is an element: no script, no image, no handler, no javascript: link.
    assert await answer.locator("script, img, [onerror], a").count() == 0
    assert await page.locator("#turns script, #turns img, #turns [onerror]").count() == 0
    assert await page.evaluate("window.pwned") is None

    # Copy puts the answer's Markdown source on the clipboard, as the model wrote it.
    await page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=live_server.url
    )
    await chat.messages.last.get_by_test_id("copy").click()
    await expect(chat.messages.last.get_by_test_id("copy")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == INJECTED
    await chat.screenshot(tmp_path / "conversation-markdown-inert.png")


async def test_stop_keeps_the_answer_so_far(live_server: LiveServer, page: Page) -> None:
    chat = await open_chat(page, live_server)
    await page.evaluate(CANCEL_ON_FIRST_WORDS)
    await chat.send("You may", max_tokens=2000)
    turns = (await chat.stored())["turns"]
    job = await chat.job(turns[1]["job"])
    assert job["status"] == "cancelled" and 0 < job["token_count"] < 200
    assert turns[1]["content"] == job["output"].strip()
    await expect(chat.metrics).to_contain_text("cancelled")


async def test_a_question_the_server_cannot_store_goes_back_in_the_box(
    live_server: LiveServer, page: Page
) -> None:
    chat = await open_chat(page, live_server)

    async def refuse(route: Route) -> None:
        await route.fulfill(
            status=503, json={"error": "Unavailable", "detail": "The database is away."}
        )

    await page.route("**/api/conversations/*/turns", refuse)
    await chat.run("You may", 8, style="chat")
    await expect(chat.flash).to_contain_text(
        "The conversation could not be saved: The database is away."
    )
    await expect(page.get_by_test_id("prompt")).to_have_value("You may")
    await expect(chat.messages).to_have_count(0)
    await expect(page.get_by_test_id("run")).to_be_enabled()
