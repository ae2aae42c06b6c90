"""Interop: a peer that is not a browser (aiortc + python-socketio) joins through our signaling and
speaks the data-channel protocol with a browser peer, well-formed and not."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime

import httpx
import pytest
from conftest import LiveServer
from playwright.async_api import expect
from support.accounts import Account, create_room, sign_up
from support.pages import MODEL, RoomPage

from mesh.aiortc_peer import PythonPeer, allow_loopback_candidates
from mesh.conftest import OpenPeer, room_name

pytestmark = pytest.mark.browser

PROMPT = "You may"


@pytest.fixture
async def python_peer(live_server: LiveServer):
    allow_loopback_candidates()
    account = await sign_up(live_server.url)
    peer = PythonPeer(live_server.url, account.token)
    peer.account = account
    yield peer
    await peer.close()


async def test_python_peer_exchanges_protocol_with_browser_peer(
    live_server: LiveServer, open_peer: OpenPeer, python_peer: PythonPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    assert await python_peer.join(room["slug"]) == []
    browser = await open_peer(room["slug"], owner)
    browser_id = await browser.own_peer_id()

    # The browser, the newcomer, offers; aiortc answers with its candidates in the SDP.
    await python_peer.opened.wait()
    # A hello on open, and again whenever the page's status changes (its model warmed up).
    hello = await python_peer.expect(
        "hello", where=lambda m: MODEL in m["capabilities"]["models_warm"]
    )
    assert python_peer.remote == browser_id and hello["peer_id"] == browser_id
    assert (
        hello["capabilities"]["backend"] in ("wasm", "webgpu")
        and MODEL in hello["capabilities"]["models"]
    )
    python_peer.send(
        {
            "type": "hello",
            "peer_id": python_peer.peer_id,
            "capabilities": {
                "backend": "wasm",
                "models": [MODEL],
                "models_warm": [],
                "state": "idle",
                "queue": 0,
                "tok_s": 0,
            },
        }
    )
    await browser.wait_for_links(1)
    python_peer.send({"type": "ping", "n": 7})
    assert (await python_peer.expect("pong", n=7))["v"] == 1

    # The Python peer asks the browser for a job and reads the token stream.
    local = await browser.run_and_wait(PROMPT, 24, "local")
    job_id = str(uuid.uuid4())
    python_peer.send(
        {
            "type": "job_offer",
            "job_id": job_id,
            "model": MODEL,
            "task": "text-generation",
            "prompt_tokens": 2,
        }
    )
    accept = await python_peer.expect("job_accept", job_id=job_id)
    assert accept["eta_ms"] >= 0
    python_peer.send(
        {
            "type": "job_run",
            "job_id": job_id,
            "model": MODEL,
            "prompt": PROMPT,
            "params": {"max_new_tokens": 24},
        }
    )
    tokens, done = [], None
    while done is None:
        message = await python_peer.inbox.get()
        if message["type"] == "token" and message["job_id"] == job_id:
            tokens.append(message)
        elif message["type"] == "job_done":
            done = message
    seqs = [t["seq"] for t in tokens]
    assert seqs == sorted(seqs) and seqs[-1] == 24 and len(seqs) > 1  # streamed, in order
    assert "".join(t["text"] for t in tokens) == done["text"] == local["output"]
    assert done["metrics"]["tokens"] == 24 and done["metrics"]["reason"] == "length"
    await expect(browser.serving).to_contain_text(f"Ran {MODEL} for {python_peer.account.username}")

    # Bad input is dropped and logged; the link and the page go on.
    python_peer.send_raw("not json")
    python_peer.send_raw(
        json.dumps({"v": 1, "type": "token", "job_id": job_id, "seq": 1, "text": "x" * 200_000})
    )
    python_peer.send_raw(json.dumps({"v": 2, "type": "ping", "n": 1}))
    python_peer.send({"type": "nonsense"})
    python_peer.send({"type": "token", "job_id": str(uuid.uuid4()), "seq": 1, "text": "for no job"})
    python_peer.send(
        {
            "type": "job_run",
            "job_id": str(uuid.uuid4()),
            "model": MODEL,
            "prompt": PROMPT,
            "params": {},
        }
    )
    assert (await python_peer.expect("job_error"))["code"] == "not_offered"
    python_peer.send({"type": "ping", "n": 99})
    await python_peer.expect("pong", n=99)
    ignored = await browser.console_lines("mesh: ignored a message", 5)
    for problem in (
        "not JSON",
        "over the 131072 cap",
        "unsupported protocol version 2",
        "unknown type",
        "for a job it was not given",
    ):
        assert any(problem in line for line in ignored), (problem, ignored)

    # The browser offers its own job; the Python peer declines, then claims it anyway.
    await browser.run(PROMPT, 24, "mesh")
    offer = await python_peer.expect("job_offer")
    python_peer.send({"type": "job_decline", "job_id": offer["job_id"], "reason": "busy"})
    python_peer.send({"type": "token", "job_id": offer["job_id"], "seq": 1, "text": " INJECTED"})
    python_peer.send(
        {"type": "job_done", "job_id": offer["job_id"], "text": " INJECTED", "metrics": {}}
    )
    job = await browser.recorded_job()
    assert job["output"] == local["output"] and "INJECTED" not in job["output"]
    assert job["workers"] == ["local"]
    await expect(browser.flash).to_contain_text("ran in this browser")
    assert not [line for line in browser.console if line.startswith("pageerror")]


def capabilities(tok_s: float) -> dict:
    return {
        "backend": "webgpu",
        "models": [MODEL],
        "models_warm": [MODEL],
        "state": "idle",
        "queue": 0,
        "tok_s": tok_s,
    }


async def linked_pair(
    server: LiveServer, open_peer: OpenPeer, python_peer: PythonPeer, tok_s: float
) -> tuple[RoomPage, Account, dict]:
    """A browser peer in a fresh room, linked to the Python peer, which says it runs at `tok_s`."""
    owner = await sign_up(server.url)
    room = await create_room(server.url, owner, room_name(), private=False)
    await python_peer.join(room["slug"])
    browser = await open_peer(room["slug"], owner)
    await python_peer.opened.wait()
    python_peer.send(
        {"type": "hello", "peer_id": python_peer.peer_id, "capabilities": capabilities(tok_s)}
    )
    await browser.wait_for_links(1)
    return browser, owner, room


async def test_silent_worker_is_dropped_and_the_job_finishes_here_with_the_same_text(
    live_server: LiveServer, open_peer: OpenPeer, python_peer: PythonPeer
) -> None:
    browser, _, _ = await linked_pair(live_server, open_peer, python_peer, tok_s=5000)
    local = await browser.run_and_wait(PROMPT, 48, "local")
    words = local["output"].split(" ")

    # The Python peer takes the job, streams the first words of the right answer, then hangs.
    await browser.run(PROMPT, 48, "mesh")
    offer = await python_peer.expect("job_offer")
    python_peer.send({"type": "job_accept", "job_id": offer["job_id"], "eta_ms": 0})
    run = await python_peer.expect("job_run", job_id=offer["job_id"])
    assert (
        run["prompt"] == PROMPT
        and run["params"]["max_new_tokens"] == 48
        and "resume_text" not in run
    )
    for seq, word in enumerate(words[1:9], start=1):
        python_peer.send({"type": "token", "job_id": run["job_id"], "seq": seq, "text": f" {word}"})
    await expect(browser.output).to_have_text(" ".join(words[:9]))
    python_peer.silent = True  # no more pongs: the link stays up, but nobody answers

    job = await browser.recorded_job(timeout=20_000)  # heartbeats give up after 3.5 s of silence
    assert job["output"] == local["output"]
    assert job["attempts"] == 2 and job["workers"] == [python_peer.peer_id, "local"]
    await expect(browser.metrics).to_contain_text(
        f"{python_peer.account.username}'s browser dropped out; this browser finished it"
    )


async def test_auto_mode_weighs_this_browser_against_a_peer(
    live_server: LiveServer, open_peer: OpenPeer, python_peer: PythonPeer
) -> None:
    browser, _, _ = await linked_pair(live_server, open_peer, python_peer, tok_s=1)
    hello = {"type": "hello", "peer_id": python_peer.peer_id}
    local = await browser.run_and_wait(PROMPT, 200, "local")

    # A peer that says it makes one token a second loses to this browser, even when free at once.
    await browser.run(PROMPT, 200, "auto")
    offer = await python_peer.expect("job_offer")
    python_peer.send({"type": "job_accept", "job_id": offer["job_id"], "eta_ms": 0})
    await python_peer.expect("job_cancel", job_id=offer["job_id"])  # its place is released
    slow = await browser.recorded_job()
    assert (
        slow["mode"] == "auto"
        and slow["workers"] == ["local"]
        and slow["output"] == local["output"]
    )

    # A peer far faster than this browser wins the next one, and its answer is what the page shows.
    python_peer.send(hello | {"capabilities": capabilities(tok_s=1_000_000)})
    await browser.run(PROMPT, 200, "auto")
    offer = await python_peer.expect("job_offer")
    python_peer.send({"type": "job_accept", "job_id": offer["job_id"], "eta_ms": 0})
    run = await python_peer.expect("job_run", job_id=offer["job_id"])
    words = local["output"].split(" ")
    for seq, word in enumerate(words[1:], start=1):
        python_peer.send({"type": "token", "job_id": run["job_id"], "seq": seq, "text": f" {word}"})
    python_peer.send(
        {
            "type": "job_done",
            "job_id": run["job_id"],
            "text": local["output"],
            "metrics": {"tokens": 200, "reason": "length"},
        }
    )
    fast = await browser.recorded_job()
    assert fast["workers"] == [python_peer.peer_id] and fast["output"] == local["output"]
    assert fast["token_count"] == 200
    await expect(browser.metrics).to_contain_text(
        f"ran on {python_peer.account.username}'s browser"
    )


async def test_a_long_job_is_in_the_history_while_it_runs_and_keeps_its_own_timing(
    live_server: LiveServer, open_peer: OpenPeer, python_peer: PythonPeer
) -> None:
    browser, owner, room = await linked_pair(live_server, open_peer, python_peer, tok_s=5000)

    # A short run is recorded once it is over; a long one is in the history while it streams.
    await browser.run(PROMPT, 48, "mesh")
    offer = await python_peer.expect("job_offer")
    python_peer.send({"type": "job_accept", "job_id": offer["job_id"], "eta_ms": 0})
    run = await python_peer.expect("job_run", job_id=offer["job_id"])
    ran_at = time.monotonic()
    python_peer.send({"type": "token", "job_id": run["job_id"], "seq": 1, "text": " one"})
    async with httpx.AsyncClient(
        base_url=live_server.url, headers={"Authorization": f"Bearer {owner.token}"}
    ) as api:
        running = None
        for seq in range(2, 40):
            await asyncio.sleep(0.1)
            python_peer.send({"type": "token", "job_id": run["job_id"], "seq": seq, "text": " more"})
            jobs = (await api.get("/api/jobs", params={"room": room["slug"]})).json()["jobs"]
            if jobs and jobs[0]["status"] == "running":
                running = jobs[0]
                break
        assert running, "a run longer than a second should be in the history as running"
        # Not before a second into the run (a busy machine may take longer to show it).
        assert time.monotonic() - ran_at > 0.9
        assert running["worker_peer"] == python_peer.peer_id
        await asyncio.sleep(0.5)
        text = " one" + " more" * (seq - 1)
        python_peer.send(
            {
                "type": "job_done",
                "job_id": run["job_id"],
                "text": text,
                "metrics": {"tokens": seq, "reason": "eos"},
            }
        )
        took = time.monotonic() - ran_at
        job = await browser.recorded_job()
    assert job["id"] == running["id"] and job["status"] == "succeeded" and job["output"] == text
    # Dated from the browser's own clock, not from when each request arrived: the run lasted at
    # least as long as this test held it open, while its "running" record left a second late.
    # (Margins only below: a busy machine delays requests, which can only lengthen it.)
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    assert (finished - started).total_seconds() > took - 0.5
    assert 0 < job["ttft_ms"] < (finished - started).total_seconds() * 1000
