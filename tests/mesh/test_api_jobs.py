"""The room as an API, end to end: the official openai client against a live server, and room pages
in headless Chromium serving its jobs with the tiny model. The answers are the ones a room page
writes for itself; closing the stream stops the page; a page that closes mid-answer hands the rest
to another, and the client reads every word once."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer
from openai import AsyncOpenAI
from playwright.async_api import expect
from support.accounts import Account, create_room, sign_up
from support.pages import MODEL

from mesh.conftest import OpenPeer, first_worker, room_name
from mesh_nanollm.worker.engine import load_engine

pytestmark = pytest.mark.browser

PROMPT = "You may"
CHAT = [{"role": "user", "content": "You may"}]
# What a model without a chat template reads for CHAT, on every peer (docs/realtime.md, "API jobs").
CHAT_AS_TEXT = "user: You may\nassistant:"


def api_client(server: LiveServer, account: Account, slug: str) -> AsyncOpenAI:
    # No retries: a retried request would be a second job, and hide the first one's failure.
    return AsyncOpenAI(
        base_url=f"{server.url}/api/rooms/{slug}/v1",
        api_key=account.token,
        max_retries=0,
        timeout=60,
    )


async def api_jobs(server: LiveServer, account: Account, slug: str) -> list[dict]:
    """The account's API jobs in room `slug`, newest first, as the history shows them."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.get(
            "/api/jobs", params={"room": slug}, headers={"Authorization": f"Bearer {account.token}"}
        )
        assert response.status_code == 200, response.text
        return [job for job in response.json()["jobs"] if job["mode"] == "api"]


async def finished_api_job(
    server: LiveServer, account: Account, slug: str, timeout: float = 20.0
) -> dict:
    """The newest API job once the server has recorded its end."""
    async with asyncio.timeout(timeout):
        while True:
            jobs = await api_jobs(server, account, slug)
            if jobs and jobs[0]["status"] in ("succeeded", "failed", "cancelled"):
                return jobs[0]
            await asyncio.sleep(0.1)


async def test_api_answers_as_the_room_page_would_streamed_or_not(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice = await open_peer(room["slug"], owner)
    alice_id = await alice.own_peer_id()
    local = await alice.run_and_wait(PROMPT, 48, "local")
    local_chat = await alice.run_and_wait(CHAT_AS_TEXT, 48, "local")
    assert len(local["output"].split()) >= 10 and local_chat["output"] != local["output"]
    client = api_client(live_server, owner, room["slug"])

    completion = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=48, temperature=0
    )
    # Greedy decoding: the page's own answer, word for word.
    assert completion.choices[0].text == local["output"]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 48
    # The page says it served someone's API request, not a peer's job.
    await expect(alice.serving).to_have_attribute("data-state", "done")
    await expect(alice.serving).to_have_attribute("data-requester", "api")
    await expect(alice.serving).to_contain_text("for an API request")

    stream = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=48, temperature=0, stream=True
    )
    pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(pieces) == local["output"] and len([p for p in pieces if p]) > 1

    chat = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=48, temperature=0
    )
    assert chat.choices[0].message.content == local_chat["output"]
    assert chat.choices[0].finish_reason == "length"

    stream = await client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=48,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(deltas) == local_chat["output"] and usage.completion_tokens == 48

    jobs = await api_jobs(live_server, owner, room["slug"])
    assert [job["status"] for job in jobs] == ["succeeded"] * 4
    assert all(job["workers"] == [alice_id] and job["attempts"] == 1 for job in jobs)
    assert [job["output"] for job in jobs] == [local_chat["output"]] * 2 + [local["output"]] * 2

    # A stop string: the page ends its answer there and counts the token that completed it (the
    # headless worker's engine, greedy on the same model, says which one that is).
    stop = local["output"].split()[5]
    engine = load_engine(MODEL, models_dir=Path(__file__).resolve().parents[2] / "models")
    greedy = engine.generate(PROMPT, {"max_new_tokens": 48}, threading.Event())
    list(greedy)
    made = next(n for n in range(1, 49) if stop in engine.decoder.decode(greedy.token_ids[:n]))
    stopped = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=48, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].text == local["output"][: local["output"].index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    assert (stopped.usage.prompt_tokens, stopped.usage.completion_tokens) == (completion.usage.prompt_tokens, made)
    assert (await finished_api_job(live_server, owner, room["slug"]))["token_count"] == made
    # The page stopped there itself: nobody had to cancel it, and it made no token past the stop.
    await expect(alice.serving).to_have_attribute("data-job-id", str(uuid.UUID(stopped.id.rsplit("-", 1)[1])))
    await expect(alice.serving).to_have_text(f"Ran {MODEL} for an API request: {made} tokens")
    assert not [line for line in alice.console if line.startswith("pageerror")]


async def test_closing_the_api_stream_stops_the_page_and_cancels_the_job(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice = await open_peer(room["slug"], owner)
    client = api_client(live_server, owner, room["slug"])

    stream = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=240, temperature=0, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # the first words: enough, as a person pressing Stop
    await stream.close()

    await expect(alice.serving).to_have_attribute("data-state", "cancelled")
    await expect(alice.serving).to_contain_text("was cancelled; stopped after")
    stopped_after = int(
        (await alice.serving.text_content() or "").rsplit("after ", 1)[1].split()[0]
    )
    assert stopped_after < 240  # the page stopped generating, it did not just stop sending
    await expect(alice.backend).to_have_attribute("data-state", "idle")
    job = await finished_api_job(live_server, owner, room["slug"])
    assert job["status"] == "cancelled" and job["token_count"] < 240


async def test_closing_the_serving_page_mid_stream_hands_the_rest_to_another(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    bob, carol = await asyncio.gather(open_peer(room["slug"]), open_peer(room["slug"]))
    ids = {await peer.own_peer_id(): peer for peer in (bob, carol)}
    # As long as the model's context allows: the first page must still be writing when it closes.
    local = await bob.run_and_wait(PROMPT, 250, "local")
    assert local["token_count"] > 100, local  # long enough to be cut in the middle
    client = api_client(live_server, owner, room["slug"])

    stream = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=250, temperature=0, stream=True
    )
    pieces, finish_reason, closed = [], None, None
    async for chunk in stream:
        if not chunk.choices:
            continue
        pieces.append(chunk.choices[0].text)
        finish_reason = chunk.choices[0].finish_reason or finish_reason
        if closed is None:
            closed, worker = await first_worker(ids)
            await worker.page.close()  # mid-answer: the tab and its socket are gone

    answer = "".join(pieces)
    # Nothing lost, nothing said twice: the page's own answer, word for word, but for its last words.
    # The server budgets the second attempt by the tokens the first one counted, which include the
    # whitespace and the unfinished word at the cut that the second writes again (docs/mesh.md,
    # "Serving API jobs"): a token or a few.
    assert local["output"].startswith(answer) and len(local["output"][len(answer) :].split()) <= 3
    assert len(answer.split()) > 100 and finish_reason == "length"
    other = next(peer_id for peer_id in ids if peer_id != closed)
    job = await finished_api_job(live_server, owner, room["slug"])
    assert job["status"] == "succeeded" and job["output"] == answer
    assert job["attempts"] == 2 and job["workers"] == [closed, other], job
    await expect(ids[other].serving).to_have_attribute("data-state", "done")
